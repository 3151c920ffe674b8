"""How a notification step reaches its responder: one ledger row per channel, each moved into
the outbox when it is due, SMS paced per phone and per SIM.

Owns: ``Channels``. ``plan`` turns the engine's ``NotifyResponder`` into rows of the notification
ledger (edge_agent/store/notifications.py), in the alert's transaction: one per channel of the
chain the responder has (``app`` always; ``sms`` and ``ring`` with a phone and the modem or its
AT port; ``push`` with a push URL), due at once or after the chain's ``after``. ``release`` moves
due rows into the outbox (in the caller's transaction), rendering each message from the alert as
it stands then: a row whose step is over (acknowledged, escalated, resolved) is cancelled
instead. SMS pacing: to one phone at most one SMS per ``[modem] every`` (what waits meanwhile
goes as one SMS listing every alert with its code: a storm of 200 alerts is one SMS, not 200),
at most ``per_minute`` SMS from the SIM, at most ``daily_cap`` a local day; past the cap an SMS
fails ("daily cap reached", alarmed), so the step's other channels or the next responder take
over. Steps whose every channel failed are collected in ``exhausted`` for the delivery loop
(edge_agent/agent/deliveries.py) to escalate at once.
Must not import: the app, the intake.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict, deque
from collections.abc import Callable

from edge_agent.agent import topics
from edge_agent.agent.context import GatewayContext
from edge_agent.engine import NotifyResponder
from edge_agent.models import Alert, AlertMessage, encode
from edge_agent.notify.report import LINK_OF, notification_topic
from edge_agent.policy.messages import render_alert, render_storm
from edge_agent.policy.units import parse_duration
from edge_agent.store.notifications import Notification
from edge_agent.store.outbox import ALERT_PRIORITY, new_id

log = logging.getLogger("edge_agent")

LIVE = ("notified", "escalated")  # an alert whose current step still waits for its responder


class Channels:
    def __init__(self, context: GatewayContext) -> None:
        self.context = context
        self.store = context.store
        self.ledger = context.store.notifications
        self.responders = {r.id: r for r in context.config.file.responders}
        modem = context.config.file.modem
        self.every_s = float(parse_duration(modem.every)) if modem is not None else 0.0
        self.per_minute = modem.per_minute if modem is not None else 0
        self.daily_cap = modem.daily_cap if modem is not None else 0
        self.push_targets: set[str] = set()  # responders with a push URL (set by the app's wiring)
        # the push for an alert and a responder, with its acknowledge link (edge_agent/agent/push_acks.py)
        self.push_payload: Callable[[Alert, str], bytes] | None = None
        self.exhausted: set[tuple[str, int]] = set()  # (alert, n) whose channels may all have failed
        self._sim_recent: deque[float] = deque()  # SMS queued in the last minute
        self._last_to: dict[str, float] = {}  # phone -> when its last SMS was queued (this run)
        self._cap_alarmed_day: dt.date | None = None

    # ----- which channels --------------------------------------------------------------------
    def target(self, channel: str, responder: str) -> str | None:
        """Where ``channel`` reaches ``responder`` on this gateway; None: it does not."""
        person = self.responders.get(responder)
        if channel == "app":
            return topics.responder_alert(self.context.gateway, responder)
        if channel in ("sms", "ring") and person is not None and person.phone and LINK_OF[channel] in self.links():
            return person.phone
        if channel == "push" and responder in self.push_targets and "push" in self.links():
            return responder
        return None

    def links(self) -> set[str]:
        return set(self.context.links.notify)

    # ----- plan: in the alert's transaction -----------------------------------------------------
    def plan(self, effect: NotifyResponder, now: float) -> None:
        alert = effect.alert
        chain = self.context.active.engine.policy.chains.get(alert.chain or "")
        channels = chain.channels if chain is not None else ("app",)
        after = chain.after if chain is not None else {}
        person = self.responders.get(effect.responder)
        role = person.role if person is not None else ""
        planned = 0
        for channel in channels:
            target = self.target(channel, effect.responder)
            if target is None:
                continue
            delay = float(parse_duration(after[channel])) if channel in after else 0.0
            self.ledger.add(
                alert_id=alert.alert_id,
                n=effect.n,
                step=alert.step,
                responder=effect.responder,
                role=role,
                channel=channel,
                target=target,
                due=now + delay,
                now=now,
            )
            planned += 1
        if planned == 0:
            self.context.alarm.sound(
                "unreachable",
                f"none of the chain's channels {list(channels)} reaches {effect.responder}: "
                "give them a phone or a push URL in the gateway file",
            )
            self.exhausted.add((alert.alert_id, effect.n))
        self.release(now)

    # ----- release: due rows into the outbox ------------------------------------------------
    def release(self, now: float) -> None:
        """Move due rows into the outbox (inside the caller's transaction)."""
        sms: dict[str, list[tuple[Notification, Alert]]] = defaultdict(list)
        for row in self.ledger.waiting_due(now):
            alert = self.store.alerts.get(row.alert_id)
            if alert is None or alert.status not in LIVE or alert.responder != row.responder:
                self.ledger.cancel([row.id], alert.status if alert is not None else "gone")
                continue
            if self.ledger.latest_n(row.alert_id) != row.n:
                self.ledger.cancel([row.id], "escalated")
                continue
            if row.channel == "sms":
                sms[row.target].append((row, alert))
            else:
                self._queue(row.channel, row.target, [row], self._body(row, alert), now)
        for phone, waiting in sms.items():
            self._release_sms(phone, waiting, now)

    def _release_sms(self, phone: str, waiting: list[tuple[Notification, Alert]], now: float) -> None:
        last = self._last_to.get(phone)
        if last is None:
            last = self._last_to[phone] = self.ledger.last_queued_to("sms", phone) or -1e18
        if now - last < self.every_s or not self.sim_allows(now):
            return  # they wait, and go together as one SMS
        rows = [r for r, _ in waiting]
        if self._capped(now):
            self.ledger.fail([r.id for r in rows], f"daily SMS cap ({self.daily_cap}) reached", now)
            self.exhausted.update((r.alert_id, r.n) for r in rows)
            return
        messages, gateway = self.context.active.engine.policy.messages, self.context.gateway
        if len(waiting) == 1:
            text = self._render(messages.sms, waiting[0][1])
        else:
            text = render_storm(messages, [self._render(messages.line, a) for _, a in waiting], gateway)
            log.info("%d alerts for %s go as one SMS (pacing: one per %.0f s)", len(waiting), phone, self.every_s)
        self._queue("sms", phone, rows, text.encode(), now)
        self._last_to[phone] = now
        self.spend_sms(now)

    def _queue(self, channel: str, target: str, rows: list[Notification], body: bytes, now: float) -> None:
        msg_id = new_id()
        link = LINK_OF[channel]
        topic = target if channel == "app" else notification_topic(channel, target, [msg_id])
        self.store.outbox.enqueue(link, topic, body, priority=ALERT_PRIORITY, now=now, msg_id=msg_id)
        self.ledger.queue([r.id for r in rows], msg_id)
        self.context.links.wake[link].set()

    def _body(self, row: Notification, alert: Alert) -> bytes:
        if row.channel == "app":
            return encode(self.alert_message(alert))
        if row.channel == "push" and self.push_payload is not None:
            return self.push_payload(alert, row.responder)
        return b""  # a ring says nothing: it rings

    def _render(self, template: str, alert: Alert) -> str:
        return render_alert(
            self.context.active.engine.policy.messages,
            template,
            alert_id=alert.alert_id,
            device=alert.device,
            message=alert.message,
            priority=alert.priority,
            gateway=self.context.gateway,
            rule=alert.rule,
        )

    def alert_message(self, alert: Alert) -> AlertMessage:
        kind = self.context.active.engine.site.devices.get(alert.device, ("gateway", None, None))[0]
        return AlertMessage(
            v=1,
            ts=alert.updated,
            alert_id=alert.alert_id,
            gateway=self.context.gateway,
            device=alert.device,
            kind=kind,
            priority=alert.priority,
            message=alert.message,
            rule=alert.rule,
            status=alert.status,
            responder=alert.responder,
            step=alert.step,
        )

    # ----- the SIM's budget -----------------------------------------------------------------
    def sim_allows(self, now: float) -> bool:
        recent = self._sim_recent
        while recent and now - recent[0] >= 60.0:
            recent.popleft()
        return len(recent) < self.per_minute

    def spend_sms(self, now: float) -> None:
        self._sim_recent.append(now)

    def _capped(self, now: float) -> bool:
        tz = self.context.site.tz
        today = dt.datetime.fromtimestamp(now, tz).date()
        midnight = dt.datetime.combine(today, dt.time(0), tzinfo=tz).timestamp()
        if self.ledger.sent_since("sms", midnight) < self.daily_cap:
            return False
        if self._cap_alarmed_day != today:
            self._cap_alarmed_day = today
            self.context.alarm.sound(
                "sms_cap",
                f"the daily SMS cap ({self.daily_cap}) is reached: no more SMS today; "
                "the other channels and the next responders go on ([modem] daily_cap)",
            )
        return True
