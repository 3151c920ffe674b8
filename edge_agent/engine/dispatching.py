"""The gateway's side of dispatch: the policy's state machine, fed by the engine's alerts,
acknowledgements, resolves and timers, its decisions turned into alert records and effects.

Owns: the glue between ``edge_agent.policy.dispatch_state.DispatchState`` (which decides) and
the store's alerts and the engine's timers (which remember). Every decision is applied inside the caller's
transaction: the alert row (status, step, responder), its persisted timer (``escalate:<id>``
with the notification count ``n``, ``resolve:<id>``) and the effects. After a restart the state
is rebuilt from the open alerts (notified, escalated, queued, acknowledged) and their timers:
who is notified, who is busy, which alerts wait and in which order (a never-firing
``queued:<id>`` timer holds each queued alert's place). Shift starts are in-memory timers, computed
again at each start, like the engine's time triggers.

Time on this side is epoch seconds; the state machine's ``clock`` is the local minute of the
day in the gateway's time zone. The incident's location is its device's configured home
(``Site.locations``), else the gateway (0, 0).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from typing import Literal

from msgspec.structs import replace

from edge_agent.engine.effects import AlertChanged, Effect, NotifyResponder
from edge_agent.engine.site import Site
from edge_agent.engine.timer_queue import FOREVER, TimerQueue
from edge_agent.models import Alert
from edge_agent.policy import dispatch_state as ds
from edge_agent.policy.model import Policy
from edge_agent.policy.units import parse_duration
from edge_agent.store.alerts import Alerts
from edge_agent.store.timers import Timer

OPEN = {"notified": ds.NOTIFIED, "escalated": ds.NOTIFIED, "queued": ds.QUEUED, "acknowledged": ds.ACKNOWLEDGED}
CLOSED_STATUS: dict[str, Literal["resolved", "resolve_timeout"]] = {
    ds.RESOLVED: "resolved",
    ds.RESOLVE_TIMEOUT: "resolve_timeout",
}


class GatewayDispatch:
    def __init__(self, policy: Policy, site: Site, alerts: Alerts, timers: TimerQueue) -> None:
        self.site = site
        self.alerts = alerts
        self.timers = timers
        self.queue_seq = 0  # the next queued alert's place: persisted as its "queued:<id>" timer
        self.ids: tuple[str, ...] = tuple(r.id for r in site.responders)
        self.index = {rid: i for i, rid in enumerate(self.ids)}
        self.locations: Mapping[str, tuple[float, float]] = site.locations
        self.state = ds.DispatchState(
            [ds.DispatchResponder(r.role, r.x, r.y, r.shift) for r in site.responders],
            {
                name: ds.DispatchChain(
                    tuple(c.roles),
                    float(parse_duration(c.ack_timeout)),
                    float(parse_duration(c.resolve_timeout)),
                    c.repeat_last,
                )
                for name, c in policy.chains.items()
            },
        )

    def clock(self, ts: float) -> float:
        """Local minute of the day (0-1440) at epoch second ``ts``."""
        local = dt.datetime.fromtimestamp(ts, self.site.tz)
        return local.hour * 60.0 + local.minute + (local.second + local.microsecond / 1e6) / 60.0

    def location(self, device: str) -> tuple[float, float]:
        return self.locations.get(device, (0.0, 0.0))

    # ----- start ------------------------------------------------------------------------------
    def start(self, now: float, timers: Mapping[str, Timer]) -> list[Effect]:
        """Rebuild the state from the open alerts; schedule shift starts; hand queued alerts to
        whoever is free now. Call inside a store transaction, after the timers are loaded."""
        places = {t.data["alert_id"]: int(t.data["seq"]) for t in timers.values() if t.kind == "queued"}
        self.queue_seq = max(places.values(), default=-1) + 1
        alerts = self.alerts.open_for_dispatch()  # oldest change first; queued ones by their place
        alerts.sort(key=lambda a: (a.status == "queued", places.get(a.alert_id, -1)))
        for alert in alerts:
            status = OPEN.get(alert.status)
            chain = alert.chain
            if status is None or chain is None or chain not in self.state.chains:
                continue
            x, y = self.location(alert.device)
            responder = self.index.get(alert.responder or "", -1)
            timer = timers.get(f"escalate:{alert.alert_id}")
            n = int(timer.data.get("n", 1)) if timer is not None else 1
            self.state.restore(alert.alert_id, chain, x, y, status, int(alert.step), responder, n, float(alert.created))
        for i, r in enumerate(self.site.responders):
            if not ds.full_day(r.shift):
                self._schedule_shift(i, now)
        return self.apply(self.state.offer_all(now, self.clock(now)), now)

    def _schedule_shift(self, i: int, after: float) -> None:
        """The next start of responder ``i``'s shift after ``after``, on the exact local minute
        (so that it falls together with other timers of that instant, as in the twin)."""
        tz = self.site.tz
        day = dt.datetime.fromtimestamp(after, tz).date()
        start = dt.timedelta(minutes=self.site.responders[i].shift[0])
        due = (dt.datetime.combine(day, dt.time(0), tzinfo=tz) + start).timestamp()
        while due <= after:
            day += dt.timedelta(days=1)
            due = (dt.datetime.combine(day, dt.time(0), tzinfo=tz) + start).timestamp()
        self.timers.schedule(Timer(f"shift:{i}", due, "shift", {"responder": i}))

    # ----- inputs -----------------------------------------------------------------------------
    def incident(self, alert: Alert, chain: str, now: float) -> list[Effect]:
        """A new alert for ``chain`` (one of the policy's): whom to notify, or queue it."""
        x, y = self.location(alert.device)
        decisions = self.state.incident(now, self.clock(now), alert.alert_id, x, y, chain)
        return self.apply(decisions, now, {alert.alert_id: alert})

    def ack(self, alert_id: str, responder: str, now: float) -> list[Effect]:
        i = self.index.get(responder)
        if i is None:
            return []
        return self.apply(self.state.ack(now, self.clock(now), alert_id, i), now)

    def resolve(self, alert_id: str, responder: str, now: float) -> list[Effect]:
        i = self.index.get(responder)
        if i is None:
            return []
        return self.apply(self.state.resolve(now, self.clock(now), alert_id, i), now)

    def unreachable(self, alert_id: str, responder: str, now: float) -> list[Effect]:
        """No channel can reach ``responder`` for the alert's current notification: the next step
        now (``DispatchState.unreachable``: not past the chain's last step; the escalate timer
        left behind is stale and changes nothing when it fires)."""
        i = self.index.get(responder)
        state = self.state.alerts.get(alert_id)
        if i is None or state is None or state.status != ds.NOTIFIED or state.responder != i:
            return []
        return self.apply(self.state.unreachable(now, self.clock(now), alert_id, state.notifications), now)

    def fire(self, timers: list[Timer], now: float) -> list[Effect]:
        """``escalate``, ``resolve`` and ``shift`` timers due at the same instant, fired together
        (the state machine orders them canonically, as the twin's)."""
        events: list[ds.Due] = []
        for timer in timers:
            data = timer.data
            if timer.kind == "shift":
                i = int(data["responder"])
                self._schedule_shift(i, timer.due + 60.0)
                events.append(ds.Due("shift_start", responder=i))
            elif timer.kind == "resolve":
                events.append(ds.Due("resolve_timeout", str(data["alert_id"])))
            else:
                alert_id = str(data["alert_id"])
                state = self.state.alerts.get(alert_id)
                n = int(data.get("n", state.notifications if state is not None else 0))
                events.append(ds.Due("ack_timeout", alert_id, n))
        return self.apply(self.state.due_together(now, self.clock(now), events), now)

    # ----- decisions -> alert records, timers, effects ----------------------------------------
    def apply(self, decisions: list[ds.Decision], now: float, known: dict[str, Alert] | None = None) -> list[Effect]:
        effects: list[Effect] = []
        alerts = dict(known or {})
        timers = self.timers
        for d in decisions:
            if d.kind in (ds.ACK_TIMEOUT, ds.SUPERSEDED):
                continue  # the responder is free; the alert's own next decision follows
            alert = alerts.get(d.alert) or self.alerts.get(d.alert)
            if alert is None:
                continue
            key = d.alert
            if d.kind == ds.NOTIFY:
                responder = self.ids[d.responder]
                status: Literal["notified", "escalated"] = "notified" if d.n == 1 else "escalated"
                alert = replace(alert, step=d.step, responder=responder, status=status, updated=now)
                timers.put(Timer(f"escalate:{key}", d.due, "escalate", {"alert_id": key, "n": d.n}))
                timers.drop(f"queued:{key}")
                effects.append(NotifyResponder(responder, alert, d.n))
            elif d.kind == ds.QUEUED:
                alert = replace(alert, status="queued", responder=None, updated=now)
                timers.drop(f"escalate:{key}")
                timers.put(Timer(f"queued:{key}", FOREVER, "queued", {"alert_id": key, "seq": self.queue_seq}))
                self.queue_seq += 1
            elif d.kind == ds.ACKNOWLEDGED:
                alert = replace(alert, status="acknowledged", responder=self.ids[d.responder], updated=now)
                timers.drop(f"escalate:{key}")
                timers.drop(f"queued:{key}")
                if math.isfinite(d.due):
                    timers.put(Timer(f"resolve:{key}", d.due, "resolve", {"alert_id": key}))
            else:  # RESOLVED, RESOLVE_TIMEOUT
                alert = replace(alert, status=CLOSED_STATUS[d.kind], updated=now)
                timers.drop(f"resolve:{key}")
            alerts[key] = alert
            self.alerts.put(alert)
            effects.append(AlertChanged(alert))
        return effects
