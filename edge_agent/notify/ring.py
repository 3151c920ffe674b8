"""The ring channel: a voice call that rings a responder's phone and hangs up (a "missed call").

Owns: ``RingLink`` (the ``NotifyLink`` the outbox link ``ring`` drains into: a message is a
ring, its topic ``ring/<E.164 number>/<alert ids>``, its payload ignored), over the modem's own
AT port (``[modem] ring_port``, edge_agent/notify/atport.py; USB modems expose one beside the
port gammu-smsd holds).

A ring: ``ATD<number>;`` places the call, ``AT+CLCC`` is polled for its state (2 dialing,
3 alerting: the far end rings, 0 answered), ``ATH`` hangs up ``ring_seconds`` after alerting
began, or at once when answered. The call list is the truth; unsolicited codes only give the
reason once our call is gone. Report: ``delivered`` once the far end rang (answered, or
rejected after ringing, too), ``failed`` and why otherwise.

Taken (the outbox row may go) = ``ATD`` answered ``OK``: the call is placed; what became of it
is in ``reports()``. ``publish`` awaits the whole ring (at most ``dial_seconds + ring_seconds``
and a hang-up): the modem makes one call at a time anyway, so nothing queued could go sooner,
and no call outlives its publish (a cancelled publish still hangs up). Not taken
(``TransportError``, the row stays; one ``failed`` report per topic so the chain moves on): the
port is missing, the modem does not answer ``AT``, or ``ATD`` is refused (``ERROR``, ``+CME
ERROR: SIM not inserted``/``no network service``, ``NO DIALTONE``); then ``connected`` is False
for ``retry_seconds``. A topic that is not a ring topic is refused (``PublishRefused``: parked).
Must not import: the agent, the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Sequence

from edge_agent.errors import PublishRefused, TransportError
from edge_agent.notify.atport import CALL_ENDS, AtPort, meaning
from edge_agent.notify.report import Report, parse_notification_topic, publish_each
from edge_agent.transports.link import Outgoing

NUMBER = re.compile(r"\+?[0-9]{3,15}")  # E.164: nothing else may reach an ATD command
CLCC = re.compile(r"\+CLCC:\s*(\d+),(\d),(\d),(\d)")  # index, direction (0: ours), state, mode (0: voice)


class RingLink:
    """Rings through the modem's AT port ``port``; "taken" is in the module docstring."""

    name = "ring"
    PROBE_EVERY_S = 5.0  # ``connected`` asks the modem again at most this often

    def __init__(
        self,
        port: str,
        *,
        baudrate: int = 115200,
        ring_seconds: float = 30.0,  # from when the far end starts ringing to the hang-up
        dial_seconds: float = 45.0,  # how long the network may take to ring the far end
        answer_seconds: float = 3.0,  # how long the modem may take to answer a command
        poll_seconds: float = 0.5,  # between looks at the call list
        retry_seconds: float = 10.0,  # not connected for this long after the modem failed
    ) -> None:
        self.at = AtPort(port, baudrate, answer_seconds)
        self.ring_seconds, self.dial_seconds = ring_seconds, dial_seconds
        self.poll_seconds, self.retry_seconds = poll_seconds, retry_seconds
        self.last_error: str | None = None
        self._lock = asyncio.Lock()  # one exchange, one call at a time
        self._ok, self._probed_at, self._retry_at = False, -1e9, 0.0
        self._probe_task: asyncio.Task[None] | None = None
        self._reports: list[Report] = []
        self._failed_untaken: set[str] = set()  # topics reported failed and not taken since

    # ----- the Link seam ----------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        """The port is open and answered ``AT`` (cached; a stale answer is refreshed behind)."""
        now = time.monotonic()
        if now - self._probed_at >= self.PROBE_EVERY_S and not self._lock.locked():
            with contextlib.suppress(RuntimeError):  # no running loop: nothing to refresh with
                if self._probe_task is None or self._probe_task.done():
                    self._probe_task = asyncio.get_running_loop().create_task(self._probe())
        return self._ok and now >= self._retry_at

    async def wait_connected(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if time.monotonic() >= self._retry_at:
                await self._probe()
                if self._ok:
                    return
            wait = max(self._retry_at - time.monotonic(), 0.2)
            if deadline is not None and time.monotonic() + wait > deadline:
                raise TransportError(f"ring: {self.last_error or 'not connected'}")
            await asyncio.sleep(wait)

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        found = parse_notification_topic(topic)
        if found is None or found.channel != "ring" or not NUMBER.fullmatch(found.target):
            refused = PublishRefused(0x90, "not_a_ring_topic", topic=topic, link=self.name)
            refused.args = (f"not a ring topic: {topic!r} (expected ring/<E.164 number>/<alert ids>)",)
            raise refused
        async with self._lock:
            try:
                final = await self._dial(found.target)
            except TransportError as exc:
                self._down(str(exc))
                if topic not in self._failed_untaken:
                    self._failed_untaken.add(topic)
                    self._reports.append(Report(topic, "failed", str(exc)))
                raise
            self._failed_untaken.discard(topic)
            self._retry_at = 0.0  # the modem placed a call: it is up
            try:
                report = await self._follow(topic) if final == "OK" else Report(topic, "failed", meaning(final))
            except TransportError as exc:
                self._down(str(exc))
                report = Report(topic, "failed", f"the modem stopped answering during the call: {exc}")
            finally:
                with contextlib.suppress(TransportError):
                    await self._hang_up()
            self._reports.append(report)

    async def publish_many(self, messages: Sequence[Outgoing]) -> list[Exception | None]:
        if not self.connected:
            raise TransportError(f"ring: {self.last_error or 'not connected'}")
        return await publish_each(self.publish, messages)

    def reports(self) -> list[Report]:
        taken, self._reports = self._reports, []
        return taken

    async def close(self) -> None:
        if self._probe_task is not None:
            self._probe_task.cancel()
        async with self._lock:
            self.at.close()

    # ----- the call -----------------------------------------------------------------------------
    async def _dial(self, number: str) -> str:
        """``OK`` (placed), or ``BUSY``/``NO ANSWER`` from a modem that waits for the far end;
        TransportError when the call could not be placed."""
        self._probed_at = time.monotonic()
        await self.at.open()
        self._ok = True
        self.at.drain()
        self.at.ended = ""
        final, _ = await self.at.command(f"ATD{number};", self.dial_seconds, CALL_ENDS)
        if final not in ("OK", "BUSY", "NO ANSWER"):
            raise TransportError(f"ring {number}: {meaning(final)}")
        return final

    async def _follow(self, topic: str) -> Report:
        """Poll the call list until the ring is over; the report of what the far end saw."""
        start, alerting_since = time.monotonic(), None
        while True:
            _, info = await self.at.command("AT+CLCC")
            states = [int(m[3]) for m in map(CLCC.match, info) if m and m[2] == "0" and m[4] == "0"]
            now = time.monotonic()
            if not states:  # our call is gone: the far end (or the network) ended it
                if alerting_since is not None:
                    return Report(topic, "delivered", "rang, then the callee rejected it")
                why = meaning(self.at.ended) if self.at.ended else "the call ended before it rang"
                return Report(topic, "failed", why)
            if states[0] == 0:
                return Report(topic, "delivered", "answered")
            if states[0] == 3 and alerting_since is None:
                alerting_since = now
            if alerting_since is not None and now - alerting_since >= self.ring_seconds:
                return Report(topic, "delivered", f"rang {self.ring_seconds:g} s")
            if alerting_since is None and now - start >= self.dial_seconds:
                return Report(topic, "failed", f"the phone did not ring within {self.dial_seconds:g} s")
            await asyncio.sleep(self.poll_seconds)

    async def _hang_up(self) -> None:
        final, _ = await self.at.command("ATH")
        if final != "OK":
            await self.at.command("AT+CHUP")

    async def _probe(self) -> None:
        if self._lock.locked():
            return  # an exchange is going on: it says whether the modem answers
        async with self._lock:
            self._probed_at = time.monotonic()
            try:
                await self.at.open()
            except TransportError as exc:
                self._down(str(exc))
            else:
                self._ok = True

    def _down(self, why: str) -> None:
        self._ok, self.last_error = False, why
        self._retry_at = time.monotonic() + self.retry_seconds
