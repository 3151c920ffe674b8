"""The notification channels at work: their outbox drains, what they report back, and the step
whose every channel failed.

Owns: ``Deliveries``. ``drain`` sends a notification link's outbox rows (SMS, rings, pushes),
each batch once the store's fsync covers it (an alert never leaves before it is on disk): a
row leaves the outbox only once its channel took it (the ledger row becomes ``handed``); a
channel that cannot take it (modem gone, no credit, push service down, AT port silent) marks
its ledger rows ``failed`` with the reason, counts and alarms it, and keeps the row for another
try in ``RETRY_S`` unless its step is over by then. ``run`` moves due rows into the outbox
(delayed channels, paced SMS), applies the links' reports (a delivery report: ``delivered``; a
failure: ``failed``) and, for a step whose every channel failed, calls the next responder at
once (``Intake.unreachable``; a step with delayed channels still waiting sends them now
instead). A "sent" or "delivered" never stops a chain: only a person's acknowledgement does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time

from edge_agent.agent.channels import LIVE, Channels
from edge_agent.agent.context import GatewayContext
from edge_agent.agent.intake import Intake
from edge_agent.errors import PublishRefused, TransportError
from edge_agent.notify.report import CHANNEL_OF, NotifyLink, Report, parse_notification_topic
from edge_agent.store.notifications import Notification
from edge_agent.transports.link import raise_if_cancelled

log = logging.getLogger("edge_agent")

RETRY_S = 30.0  # a message its channel could not take is offered again after this long
TICK_S = 0.25  # how often due rows are released and reports read
CONNECT_GRACE_S = 5.0  # how long a link that is not connected may take before its message counts as failed


class Deliveries:
    def __init__(self, context: GatewayContext, intake: Intake, channels: Channels) -> None:
        self.context = context
        self.store = context.store
        self.ledger = context.store.notifications
        self.intake = intake
        self.channels = channels
        self._alarmed: set[tuple[str, str]] = set()  # (link, reason) already said out loud
        self._reports: list[tuple[str, Report]] = []  # read from the links, not yet in the ledger

    async def run(self) -> None:
        for alert in self.store.alerts.answerable():  # steps that failed before a restart
            if alert.status in LIVE:
                self.channels.exhausted.add((alert.alert_id, self.ledger.latest_n(alert.alert_id)))
        while True:
            self.tick_safely()
            await asyncio.sleep(TICK_S)

    def tick_safely(self) -> None:
        try:
            self.tick()
        except sqlite3.Error as exc:  # the reports are kept, and tried again on the next tick
            self.context.alarm.sound("storage", f"notification states cannot be stored: {exc}")

    def tick(self) -> None:
        now = self.context.clock.now()
        for name, link in self.context.links.notify.items():
            self._reports += [(name, report) for report in link.reports()]
        if self._reports or self.ledger.any_due(now):
            with self.store.transaction():
                self.channels.release(now)
                for name, report in self._reports:
                    self._report(name, report.topic, report.state, report.reason, now)
            self._reports.clear()
        exhausted = sorted(self.channels.exhausted)  # what these cause is looked at on the next tick
        self.channels.exhausted.clear()
        for alert_id, n in exhausted:
            self._exhausted(alert_id, n, now)

    def _report(self, link: str, topic: str, state: str, reason: str, now: float) -> None:
        parsed = parse_notification_topic(topic)
        if parsed is None or not parsed.alert_ids:
            if state == "failed":
                self._failed(link, [], reason or "not sent", now)
            return  # an answer to a reply: nothing in the ledger
        msg_id = parsed.alert_ids[0]  # a notification's topic ends in its outbox message id
        if state == "delivered":
            self.ledger.delivered(msg_id, now)
            return
        rows = [r for r in self.ledger.by_msg(msg_id) if r.state in ("queued", "handed")]
        if rows:  # (a failure the drain saw itself is already in the ledger)
            self._failed(link, rows, reason or "not sent", now)

    def _failed(self, link: str, rows: list[Notification], reason: str, now: float) -> None:
        self.ledger.fail([r.id for r in rows], reason, now)
        self.context.stats.notify_failed[link] += 1
        who = ", ".join(sorted({r.responder for r in rows})) or "a reply"
        if (link, reason) not in self._alarmed:
            self._alarmed.add((link, reason))
            channel = CHANNEL_OF.get(link, link)
            self.context.alarm.sound(f"{channel}_failed", f"{channel}: could not reach {who}: {reason}")
        self.channels.exhausted.update((r.alert_id, r.n) for r in rows)

    def _exhausted(self, alert_id: str, n: int, now: float) -> None:
        """Every channel of the step failed: its delayed channels go now, or the next responder."""
        rows = self.ledger.of_step(alert_id, n)
        if any(r.state in ("queued", "handed", "delivered") for r in rows):
            return  # a channel may still reach them: the ack timeout decides
        if any(r.state == "waiting" for r in rows):
            with self.store.transaction():
                self.ledger.bring_forward(alert_id, n, now)
                self.channels.release(now)
            return
        alert = self.store.alerts.get(alert_id)
        if alert is None or alert.status not in LIVE or alert.responder is None or self.ledger.latest_n(alert_id) > n:
            return
        log.warning("no channel reached %s for alert %s: the next step now", alert.responder, alert_id)
        self.intake.unreachable(alert_id, alert.responder)

    # ----- a notification link's outbox ---------------------------------------------------------
    async def drain(self, name: str, link: NotifyLink) -> None:
        wake = self.context.links.wake[name]
        outbox = self.store.outbox
        while True:
            raise_if_cancelled()  # (a library may have turned a stop into an error we caught)
            now = self.context.clock.now()
            batch = outbox.pending(name, limit=16, now=now)
            if not batch:
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):  # (3.11's wait_for can swallow a cancellation)
                        await wake.wait()
                continue
            try:  # every row here is an alert's: none leaves before the fsync that keeps it
                await self.store.sync()
            except sqlite3.Error as exc:
                log.warning("%s outbox paused: its alerts are not on disk: %s", name, exc)
                await asyncio.sleep(1.0)
                continue
            for message in batch:
                rows = self._rows(message.topic)
                if rows and not any(self._live(r) for r in rows):  # its step is over: not worth sending now
                    with self.store.transaction(durable=False):
                        outbox.forget([message.seq])
                    continue
                error: Exception | None = None
                if rows and await self._handed_before(link, message.topic, message.payload, rows):
                    with self.store.transaction(durable=False):  # a crash cut the last hand-off short
                        outbox.forget([message.seq])
                        self.ledger.handed([message.msg_id], self.context.clock.now())
                    continue
                if not link.connected:
                    try:  # a port opening, a daemon starting: a few seconds' grace
                        await link.wait_connected(timeout=CONNECT_GRACE_S)
                    except (TransportError, TimeoutError) as exc:
                        error = TransportError(f"the {name} link is not connected: {exc}")
                if error is None:
                    (error,) = await link.publish_many([(message.topic, message.payload, 1, False)])
                now = self.context.clock.now()
                if error is None:
                    with self.store.transaction(durable=False):
                        outbox.forget([message.seq])
                        self.ledger.handed([message.msg_id], now)
                    self.context.stats.published[name] += 1
                    continue
                log.info("%s could not take %s: %s", name, message.topic, error)
                with self.store.transaction(durable=False):
                    self._failed(name, [r for r in rows if r.state in ("queued", "handed")], str(error), now)
                    if isinstance(error, PublishRefused):  # it never will (no URL, not its kind of message)
                        outbox.forget([message.seq])
                if not isinstance(error, PublishRefused):
                    outbox.park(message.seq, "not_taken", now + RETRY_S)
            self.tick_safely()

    async def _handed_before(self, link: NotifyLink, topic: str, payload: bytes, rows: list[Notification]) -> bool:
        """Whether the channel already took this message before a crash (a link that can tell:
        the modem's daemon folders), else mark it tried, durably, before it is offered: so a
        crash in any hand-off sends it at most twice, however often it repeats."""
        tried = [r.tried for r in rows if r.tried is not None]
        taken = getattr(link, "already_taken", None)
        if tried and taken is not None and taken(topic, payload, min(tried) - 1.0):
            return True
        if not tried:
            with self.store.transaction():
                self.ledger.tried(rows[0].msg_id or "", time.time())  # wall clock: the daemon's files' mtimes
            await self.store.sync()
        return False

    def _rows(self, topic: str) -> list[Notification]:
        parsed = parse_notification_topic(topic)
        return self.ledger.by_msg(parsed.alert_ids[0]) if parsed is not None and parsed.alert_ids else []

    def _live(self, row: Notification) -> bool:
        alert = self.store.alerts.get(row.alert_id)
        return alert is not None and alert.status in LIVE and alert.responder == row.responder
