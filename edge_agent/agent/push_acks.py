"""A person's answer from a push: the link in it opens the gateway's HTTP face, whose buttons
acknowledge or resolve the alert.

Owns: ``PushAcks`` (the ``http.actions.GatewayActions`` the HTTP face calls), the gateway's
acknowledge-link secret (``meta['push.ack_secret']``, made once, kept across restarts so that
links already sent keep working) and ``push_payload``, what a push for an alert says.

The link is ``<public url>/answer/<token>``, the token ``ack_token(secret, alert id, responder)``
(edge_agent/policy/messages.py): it names one alert and one responder and is the request's whole
credential. A press goes through the same path as an SMS reply (edge_agent/agent/replies.py)
and the app's ``responder/<id>/ack``: ``intake.acknowledge`` / ``intake.resolve``, and only
this stops an escalation. A token no alert and responder have (forged, mangled, or an alert
long gone from the store) or a press that changes nothing is counted (``push_ack_<reason>``).
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
from collections.abc import Callable

import msgspec

from edge_agent.agent.context import GatewayContext
from edge_agent.agent.intake import Intake
from edge_agent.http.actions import AckAction, AckOutcome, AckTarget
from edge_agent.models import Alert
from edge_agent.notify.push import PushPayload
from edge_agent.policy.messages import Messages, ack_token, render_sms
from edge_agent.store.db import Store

log = logging.getLogger("edge_agent")

SECRET_KEY = "push.ack_secret"
LOOKBACK = 500  # closed alerts whose links still open a page saying "not yours now"
WAITING = ("notified", "escalated", "queued", "unacknowledged")  # an acknowledgement may still take it
_TOKEN = re.compile(r"[A-Za-z0-9_-]{22}")


def ack_secret(store: Store) -> bytes:
    """This gateway's key for acknowledge links, made on first use."""
    found = store.meta.get(SECRET_KEY)
    if found is None:
        found = secrets.token_hex(32)
        with store.transaction():
            store.meta.set(SECRET_KEY, found)
    return bytes.fromhex(found)


def push_payload(messages: Messages, alert: Alert, gateway: str, ack_url: str | None) -> bytes:
    """The push for ``alert``: the policy's SMS text as the body (the reply code in it still
    works by SMS), the priority word and the device as the title, and the acknowledge link."""
    title = f"{messages.urgent if alert.priority <= 1 else messages.alert} {alert.device}"
    body = render_sms(
        messages,
        alert_id=alert.alert_id,
        device=alert.device,
        message=alert.message,
        priority=alert.priority,
        gateway=gateway,
        rule=alert.rule,
    )
    return msgspec.json.encode(PushPayload(title, body, ack_url))


class PushAcks:
    """``base_url``: the HTTP face's address as a phone reaches it, None while it is not served."""

    def __init__(self, context: GatewayContext, intake: Intake, base_url: Callable[[], str | None]) -> None:
        self.context = context
        self.intake = intake
        self.base_url = base_url
        self.secret = ack_secret(context.store)
        self.responders = tuple(r.id for r in context.config.file.responders)

    def ack_url(self, alert_id: str, responder: str) -> str | None:
        base = self.base_url()
        return None if base is None else f"{base}/answer/{ack_token(self.secret, alert_id, responder)}"

    def payload(self, alert: Alert, responder: str) -> bytes:
        """What to queue on the ``push`` link for ``responder`` (topic ``push/<responder>/<id>``)."""
        messages = self.context.active.engine.policy.messages
        return push_payload(messages, alert, self.context.gateway, self.ack_url(alert.alert_id, responder))

    # ----- http.actions.GatewayActions ----------------------------------------------------------
    def ack_target(self, token: str) -> AckTarget | None:
        found = self._find(token)
        if found is None:
            return None
        alert, responder = found
        allowed: tuple[AckAction, ...] = ()
        if alert.status in WAITING:
            allowed = ("ack",)
        elif alert.status == "acknowledged" and alert.responder == responder:
            allowed = ("resolve",)
        return AckTarget(alert.alert_id, responder, alert.device, alert.message, alert.status, allowed)

    async def push_ack(self, token: str, action: AckAction) -> AckOutcome:
        found = self._find(token)
        if found is None:
            self._refuse("forged")
            return "forged"
        alert, responder = found
        if action == "ack" and alert.status == "acknowledged" and alert.responder == responder:
            return "acknowledged"  # a second press: nothing to change
        if action == "ack":
            changed = self.intake.acknowledge(alert.alert_id, responder)
        else:
            changed = self.intake.resolve(alert.alert_id, responder)
        await self.context.store.sync()
        if not changed:
            self._refuse("not_yours")
            return "not_yours"
        self.context.stats.push_acks[action] += 1
        log.info("push link from %s: %s (alert %s)", responder, action, alert.alert_id)
        return "acknowledged" if action == "ack" else "resolved"

    def _find(self, token: str) -> tuple[Alert, str] | None:
        """The (alert, responder) whose link ``token`` is: open alerts first, then recent ones."""
        if not _TOKEN.fullmatch(token):
            return None
        alerts = self.context.store.alerts
        seen: set[str] = set()
        for alert in (*alerts.answerable(), *alerts.newest(LOOKBACK)):
            if alert.alert_id in seen:
                continue
            seen.add(alert.alert_id)
            for responder in self.responders:
                if hmac.compare_digest(ack_token(self.secret, alert.alert_id, responder), token):
                    return alert, responder
        return None

    def _refuse(self, reason: str) -> None:
        self.context.stats.rejected[f"push_ack_{reason}"] += 1
        self.context.unflushed.rejects[f"push_ack_{reason}"] += 1
        log.warning("push link refused (%s)", reason)
