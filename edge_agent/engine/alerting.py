"""Alert lifecycles on the gateway: an alert raised, then notified, escalated, acknowledged,
resolved, each change traced.

Owns: new alert records (``edge_agent.models.Alert``, stored inside the caller's transaction),
handing those with one of the policy's chains to dispatch (edge_agent/engine/dispatching.py),
responders' acknowledgements and resolves, dispatch timers firing (``escalate``, ``resolve``,
``shift``), and the trace of every dispatch change (under the alert's rule).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from edge_agent.engine.dispatching import GatewayDispatch
from edge_agent.engine.effects import AlertChanged, Effect
from edge_agent.engine.site import Site
from edge_agent.engine.timer_queue import TimerQueue
from edge_agent.models import Alert
from edge_agent.policy.model import Policy
from edge_agent.store.alerts import Alerts
from edge_agent.store.outbox import new_id
from edge_agent.store.timers import Timer

DISPATCH_TIMERS = frozenset({"escalate", "resolve", "shift"})


class Alerting:
    def __init__(
        self, policy: Policy, site: Site, alerts: Alerts, timers: TimerQueue, trace: Callable[[dict[str, Any]], None]
    ) -> None:
        self.chains = policy.chains
        self.alerts = alerts
        self.trace = trace
        # who is notified, busy or off shift; which responder an alert gets (the twin's code)
        self.dispatch = GatewayDispatch(policy, site, alerts, timers)

    def start(self, now: float, timers: Mapping[str, Timer]) -> list[Effect]:
        """Rebuild dispatch from the open alerts, once the persisted timers are loaded."""
        return self.dispatch.start(now, timers)

    def raise_alert(
        self,
        rule: str,
        device: str,
        priority: int,
        message: str,
        chain: str | None,
        now: float,
        effects: list[Effect],
    ) -> Alert:
        alert = Alert(
            alert_id=new_id(),
            created=now,
            device=device,
            rule=rule,
            priority=priority,
            message=message,
            chain=chain,
            step=0,
            responder=None,
            status="raised",
            updated=now,
        )
        self.alerts.put(alert)
        if chain is not None and chain in self.chains:
            effects.extend(self.dispatch.incident(alert, chain, now))
        else:
            effects.append(AlertChanged(alert))
        return alert

    def acknowledge(self, alert_id: str, responder: str, now: float) -> list[Effect]:
        """A responder acknowledged: stop escalating; the responder is busy until the alert is
        resolved. Unknown, repeated or refused acks (edge_agent/policy/dispatch_state.py) change
        nothing."""
        return self._traced(self.dispatch.ack(alert_id, responder, now), "ack", alert_id, responder, now)

    def resolve(self, alert_id: str, responder: str, now: float) -> list[Effect]:
        """The busy responder resolved the alert: available again. Others change nothing."""
        return self._traced(self.dispatch.resolve(alert_id, responder, now), "resolve", alert_id, responder, now)

    def unreachable(self, alert_id: str, responder: str, now: float) -> list[Effect]:
        """Every channel to the notified responder failed: the next step now, not at the timeout."""
        return self._traced(
            self.dispatch.unreachable(alert_id, responder, now), "unreachable", alert_id, responder, now
        )

    def fire(self, timers: list[Timer], now: float) -> list[Effect]:
        """Dispatch timers due at the same instant, fired as one batch."""
        effects = self.dispatch.fire(timers, now)
        for timer in timers:
            if timer.kind != "shift":
                alert_id = timer.data["alert_id"]
                mine: list[Effect] = [
                    e for e in effects if isinstance(e, AlertChanged) and e.alert.alert_id == alert_id
                ]
                trigger = "escalation" if timer.kind == "escalate" else "resolve_timeout"
                self._traced(mine, trigger, alert_id, "", now)
        return effects

    def _traced(self, effects: list[Effect], kind: str, alert_id: str, who: str, now: float) -> list[Effect]:
        changed = [e.alert for e in effects if isinstance(e, AlertChanged)]
        if changed:
            self.trace(
                {
                    "rule": changed[0].rule,
                    "ts": now,
                    "trigger": {"type": kind, "alert": alert_id, "responder": who},
                    "condition": None,
                    "actions": [f"{a.alert_id} {a.status} -> {a.responder}" for a in changed],
                    "duration_us": 0,
                }
            )
        return effects
