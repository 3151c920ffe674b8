"""Push notifications as a link: ntfy, Gotify, Telegram, a webhook... through Apprise.

Owns: ``PushLink`` (the ``NotifyLink`` the ``push`` outbox drains into), ``PushPayload`` (what
a queued push holds: title, body and, when the gateway's HTTP face is reachable, the link that
acknowledges the alert) and ``read_push_urls`` (each responder's Apprise URL, from the file
``responders[].push_url_file`` names).

Topic ``push/<responder id>/<alert ids>`` (edge_agent/notify/report.py): the target is the
responder, never the URL, which carries a token; nothing here logs more of a URL than its scheme.

"Taken" means *accepted by the push service* (its server answered 2xx): the closest a push has to
a delivery report. Whether the phone showed it, nobody tells us; only the responder's
acknowledgement (the link in the push, an SMS reply, the app) stops an escalation. A push the
service refused or could not be reached for raises ``TransportError``: the outbox keeps the row
and sends it again. A push that can never go (no URL for that responder, a payload that is not
a push) is ``PublishRefused``: the drain parks it and sounds the alarm. Each outcome is also a
``Report`` (``delivered``, or ``failed`` with the reason), taken by ``reports()``.
Must not import: the agent, the engine.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from edge_agent.config.push import keep_secret, quiet_apprise, read_push_url, redact, url_scheme
from edge_agent.config.schema import GatewayFile
from edge_agent.errors import ConfigError, Problem, PublishRefused, TransportError
from edge_agent.notify.report import Report, parse_notification_topic, publish_each
from edge_agent.transports.link import Outgoing

if TYPE_CHECKING:
    from apprise import Apprise

log = logging.getLogger("edge_agent.push")

PUSH_TIMEOUT_S = 15.0  # one push, connect to answer; the outbox sends it again later


class PushPayload(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A queued push: ``ack_url`` (None without a reachable HTTP face) goes below the body."""

    title: str
    body: str
    ack_url: str | None = None


def read_push_urls(gw: GatewayFile, config_path: Path) -> dict[str, str]:
    """{responder id: Apprise URL} of every responder with a ``push_url_file`` (relative to the
    gateway file at ``config_path``); ConfigError naming each responder and file that fails."""
    urls: dict[str, str] = {}
    problems: list[Problem] = []
    for i, responder in enumerate(gw.responders):
        if responder.push_url_file is None:
            continue
        try:
            urls[responder.id] = read_push_url(
                (config_path.parent / responder.push_url_file).resolve(),
                source=str(config_path),
                key=f"responders[{i}].push_url_file",
                responder=responder.id,
            )
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    return urls


class PushLink:
    """Pushes through each responder's Apprise URL; ``connected`` while it has one at all."""

    name = "push"

    def __init__(self, urls: dict[str, str], timeout_s: float = PUSH_TIMEOUT_S) -> None:
        quiet_apprise()
        from apprise import Apprise  # its plugin table: only on a gateway that pushes

        self.timeout_s = timeout_s
        self.schemes = {responder: url_scheme(url) for responder, url in urls.items()}
        self._services: dict[str, Apprise] = {}
        for responder, url in urls.items():
            keep_secret(url)
            service = Apprise()
            if not service.add(url):
                raise ConfigError(
                    [Problem("push", responder, f"Apprise cannot use this {self.schemes[responder]}:// URL")]
                )
            self._services[responder] = service
        self.accepted = 0  # pushes the service took
        self.failed = 0  # pushes refused, unreachable or timed out
        self._reports: list[Report] = []
        for responder, scheme in sorted(self.schemes.items()):
            log.info("push to %s through %s://", responder, scheme)

    # ----- the Link seam ----------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return bool(self._services)

    async def wait_connected(self, timeout: float | None = None) -> None:
        if self.connected:
            return
        if timeout is not None:
            await asyncio.sleep(timeout)
        else:
            await asyncio.Event().wait()  # no URL will appear in this run
        raise TransportError("no responder has a push URL")

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Return once the push service accepted it; see the module's docstring for the errors."""
        parsed = parse_notification_topic(topic)
        if parsed is None or parsed.channel != "push":
            raise self._refuse(topic, 0x90, "topic_name_invalid", "not a push topic (push/<responder>/<alerts>)")
        service = self._services.get(parsed.target)
        if service is None:
            raise self._refuse(topic, 0x90, "topic_name_invalid", f"no push URL for responder {parsed.target!r}")
        try:
            push = msgspec.json.decode(payload, type=PushPayload)
        except msgspec.DecodeError as exc:
            raise self._refuse(topic, 0x99, "payload_format_invalid", f"not a push payload: {exc}") from None
        body = push.body if push.ack_url is None else f"{push.body}\n\n{push.ack_url}"
        reason = await self._send(service, push.title, body)
        if reason is not None:
            self.failed += 1
            self._reports.append(Report(topic, "failed", reason))
            log.warning("push to %s (%s://) failed: %s", parsed.target, self.schemes[parsed.target], reason)
            raise TransportError(f"push to {parsed.target} failed: {reason}")
        self.accepted += 1
        self._reports.append(Report(topic, "delivered"))

    async def publish_many(self, messages: Sequence[Outgoing]) -> list[Exception | None]:
        if not self.connected:
            raise TransportError("no responder has a push URL")
        return await publish_each(self.publish, messages)

    def reports(self) -> list[Report]:
        taken, self._reports = self._reports, []
        return taken

    # ----- Apprise ------------------------------------------------------------------------------
    async def _send(self, service: Apprise, title: str, body: str) -> str | None:
        """None once the service accepted the push, else why not (for a person; no URL in it)."""
        try:
            async with asyncio.timeout(self.timeout_s + 5.0):  # (3.11's wait_for can swallow a cancellation)
                result = await service.async_notify(body=body, title=title, timeout=self.timeout_s)
        except TimeoutError:
            return f"no answer within {self.timeout_s:.0f} s"
        except Exception as exc:  # Apprise's own failure, whatever it is: a failed push, said why
            return redact(f"Apprise failed: {exc!r}")
        if result:
            return None
        said = [  # Apprise 2 says why in each attempt's log; 1.x answers a bare False
            entry.message
            for notified in getattr(result, "results", ())
            for attempt in notified.attempts
            for entry in attempt.logs
            if entry.level in ("WARNING", "ERROR", "CRITICAL")
        ]
        return redact(said[-1] if said else "the push service did not accept it")

    def _refuse(self, topic: str, code: int, reason: str, detail: str) -> PublishRefused:
        self.failed += 1
        self._reports.append(Report(topic, "failed", detail))
        log.warning("push %s refused: %s", topic, detail)
        return PublishRefused(code, reason, topic=topic, link=self.name)
