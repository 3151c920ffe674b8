"""Responders and dispatch in SimPy: acknowledgement, travel, service, driven by the gateway's
own dispatch state machine.

Owns: the ``Dispatcher``. Every dispatch decision (who is notified at which chain step, when an
unanswered notification escalates, who is busy, the FIFO queue when the whole chain is busy
or off shift, the release on resolve or resolve timeout) is made by
``edge_agent.policy.dispatch_state.DispatchState``, the very code the gateway's engine runs;
this module only plays the world around it: a notification reaches the responder through the
scenario's channels and the responder answers after the tier's delay (``twin.sim.reach``: the
channel failures and delivery delays, the wait for the incident gateway's uplink on routes that
need it; an answer later than the chain's ``ack_timeout`` is no answer), then travels
(``travel_minutes``: straight line times a detour factor), serves on scene, travels back and
resolves the alert. Each notification is kept on its incident as a ``Call`` (sent, answered)
for the answer KPIs. Shift starts are fed to the state machine as events. Twin time is in
minutes, 0 = local noon.

A notification goes by its chain's channels (the policy's ``channels``, each after its ``after``
delay). When every channel of it fails, the step's ack timeout falls as soon as the last failure
is known, not at the chain's ack timeout: the state machine's ``ack_timeout`` for that
notification, as the gateway's ``GatewayDispatch.unreachable`` calls it.

``outcome`` (when the responder acknowledges, or when every channel is known to have failed)
and ``work`` are the two behaviours a replay (tests/test_dispatch_replay.py) overrides to feed a
recorded trace instead of random draws.

Must not import: numba, twin.kernels, edge_agent.agent/engine/transports.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import simpy

from edge_agent.policy import dispatch_state as ds
from edge_agent.policy.dispatch import travel_minutes
from twin.sim.reach import EVERY_CHANNEL_AT_ONCE, Outcome, Reach


@dataclass(frozen=True)
class ChainSpec:
    roles: tuple[str, ...]
    ack_timeout_min: float
    repeat_last: bool = False
    resolve_timeout_min: float = math.inf
    # the policy's channels of the chain, each with its start (minutes after the step starts: ``after``)
    channels: Mapping[str, float] = field(default_factory=lambda: EVERY_CHANNEL_AT_ONCE)


@dataclass(frozen=True)
class ResponderSpec:
    x: float
    y: float
    role: str
    speed_kmh: float
    shift: tuple[float, float] = ds.FULL_DAY  # local clock minutes; may wrap midnight
    local: bool = True


@dataclass
class Call:
    """One notification of an incident: to whom, when sent, when a person answered (NaN: never)."""

    responder: int
    sent: float
    answered: float = math.nan


@dataclass
class Incident:
    kind: str
    area: str
    x: float
    y: float
    chain: str
    occurred: float  # twin minutes
    service_min: float
    gateway: int = 0
    notified: float = math.nan
    assigned: float = math.nan
    arrived: float = math.nan
    done: float = math.nan
    escalations: int = 0
    responder: int = -1
    calls: list[Call] = field(default_factory=list, repr=False)
    on_arrival: Callable[[Incident], None] | None = field(default=None, repr=False)
    finished: simpy.Event | None = field(default=None, repr=False)


def local_clock(t: float) -> float:
    """Local clock minute (0-1440) of twin minute ``t`` (0 = local noon)."""
    return (720.0 + t) % 1440.0


def on_shift(shift: tuple[float, float], t: float) -> bool:
    """Whether local clock time of twin minute ``t`` is within the shift."""
    return ds.on_shift(shift, local_clock(t))


class Dispatcher:
    """Dispatch of incidents to responders along the policy's chains (see module docstring)."""

    def __init__(
        self,
        env: simpy.Environment,
        responders: list[ResponderSpec],
        chains: dict[str, ChainSpec],
        rng: np.random.Generator,
        *,
        reach: Reach | None = None,
        detour_factor: float = 1.0,
        uplink_ready: Callable[[int, float], float] | None = None,
    ) -> None:
        self.env = env
        self.responders = responders
        self.chains = chains
        self.rng = rng
        self.reach = reach if reach is not None else Reach()  # default: reached and answered at once
        self.detour_factor = detour_factor
        self.uplink_ready = uplink_ready
        n = len(responders)
        self.n = n
        self.state = ds.DispatchState(
            [ds.DispatchResponder(r.role, r.x, r.y, r.shift) for r in responders],
            {
                name: ds.DispatchChain(c.roles, c.ack_timeout_min, c.resolve_timeout_min, c.repeat_last)
                for name, c in chains.items()
            },
        )
        self.busy_since = [0.0] * n
        self.busy_minutes = [0.0] * n
        self.escalations = 0
        self.messages = 0
        self.decisions: list[ds.Decision] = []  # every decision, in order (kept when ``record``)
        self.record = False
        self.incidents: dict[str, Incident] = {}
        self._done: dict[str, simpy.Event] = {}
        self._due: list[ds.Due] = []  # timer events of the current instant, not yet applied
        for i, r in enumerate(responders):
            if not ds.full_day(r.shift):
                env.process(self._shift_starts(i))

    @property
    def free(self) -> list[bool]:
        return [held is None for held in self.state.holding]

    # -- the state machine's inputs --------------------------------------------------------
    def _shift_starts(self, i: int) -> Generator[simpy.Event, Any, None]:
        shift = self.responders[i].shift
        wait = ds.minutes_to_shift_start(shift, local_clock(self.env.now))
        while True:
            yield self.env.timeout(wait)
            now = self.env.now
            self._timer(ds.Due("shift_start", responder=i))
            wait = 1.0 + ds.minutes_to_shift_start(shift, local_clock(now + 1.0))

    def _later(self, delay: float, action: Callable[[], list[ds.Decision]]) -> None:
        event = self.env.timeout(delay)
        event.callbacks.append(lambda _event: self._apply(action()))

    def _timer(self, event: ds.Due) -> None:
        """A timer event: those of one instant go to the state machine together, after every
        other event of that instant already scheduled (the gateway fires them as one batch)."""
        if not self._due:
            self.env.timeout(0).callbacks.append(lambda _event: self._flush())
        self._due.append(event)

    def _flush(self) -> None:
        events, self._due = self._due, []
        now = self.env.now
        self._apply(self.state.due_together(now, local_clock(now), events))

    def _after(self, delay: float, event: ds.Due) -> None:
        self.env.timeout(delay).callbacks.append(lambda _event: self._timer(event))

    def _ack(self, alert: str, i: int) -> Callable[[], list[ds.Decision]]:
        return lambda: self.state.ack(self.env.now, local_clock(self.env.now), alert, i)

    def _unreachable(self, alert: str, i: int, n: int) -> Callable[[], list[ds.Decision]]:
        """Every channel of notification ``n`` to responder ``i`` failed: the state machine's
        ``unreachable`` (the next step now, unless this is the chain's last step) if the alert is
        still notified to ``i`` with that ``n``, as the gateway's ``GatewayDispatch.unreachable``."""

        def fall() -> list[ds.Decision]:
            state = self.state.alerts.get(alert)
            if state is None or state.status != ds.NOTIFIED or state.responder != i or state.notifications != n:
                return []
            now = self.env.now
            return self.state.unreachable(now, local_clock(now), alert, n)

        return fall

    def respond(self, incident: Incident) -> Generator[simpy.Event, Any, None]:
        """SimPy process: from the incident to its responder back at base (or the resolve timeout)."""
        env = self.env
        alert = str(len(self.incidents))
        self.incidents[alert] = incident
        done = self._done[alert] = env.event()
        incident.notified = env.now
        self._apply(self.state.incident(env.now, local_clock(env.now), alert, incident.x, incident.y, incident.chain))
        yield done

    # -- the world's answers to decisions --------------------------------------------------
    def _apply(self, decisions: list[ds.Decision]) -> None:
        env = self.env
        for d in decisions:
            if self.record:
                self.decisions.append(d)
            incident = self.incidents[d.alert]
            if d.kind == ds.NOTIFY:
                self.busy_since[d.responder] = env.now
                self.messages += 2  # notify + (ack or timeout)
                self.escalations += d.skipped
                incident.escalations += d.skipped
                incident.calls.append(Call(d.responder, env.now))
                self._after(d.due - env.now, ds.Due("ack_timeout", d.alert, d.n))
                outcome = self.outcome(incident, d.responder, d.n)
                window = d.due - env.now
                if outcome.ack is not None and outcome.ack < window:
                    self._later(outcome.ack, self._ack(d.alert, d.responder))
                if outcome.unreachable is not None and outcome.unreachable < window:
                    self._later(outcome.unreachable, self._unreachable(d.alert, d.responder, d.n))
            elif d.kind == ds.QUEUED:
                self.escalations += d.skipped
                incident.escalations += d.skipped
            elif d.kind == ds.ACKNOWLEDGED:
                incident.assigned = env.now
                incident.responder = d.responder
                _answered(incident.calls, d.responder, env.now)
                if math.isfinite(d.due):
                    self._after(d.due - env.now, ds.Due("resolve_timeout", d.alert))
                env.process(self._job(d.alert, incident, d.responder))
            else:  # the responder is free again: ACK_TIMEOUT, SUPERSEDED, RESOLVED, RESOLVE_TIMEOUT
                self.busy_minutes[d.responder] += env.now - self.busy_since[d.responder]
                if d.kind == ds.ACK_TIMEOUT:
                    self.escalations += 1
                    incident.escalations += 1

    def _job(self, alert: str, incident: Incident, i: int) -> Generator[simpy.Event, Any, None]:
        yield from self.work(incident, i)
        now = self.env.now
        self._apply(self.state.resolve(now, local_clock(now), alert, i))
        self._done[alert].succeed(now)

    # -- behaviours (a replay overrides these) ---------------------------------------------
    def outcome(self, incident: Incident, i: int, n: int) -> Outcome:
        """Minutes until responder ``i`` acknowledges ``incident``'s ``n``-th notification, or
        until every channel of it is known to have failed (``twin.sim.reach``)."""
        now = self.env.now
        ready = self.uplink_ready

        def uplink_wait(start: float) -> float:
            return 0.0 if ready is None else max(0.0, ready(incident.gateway, now + start) - now - start)

        responder = self.responders[i]
        starts = self.chains[incident.chain].channels
        return self.reach.outcome(responder.role, starts, responder.local, uplink_wait, self.rng)

    def work(self, incident: Incident, i: int) -> Generator[simpy.Event, Any, None]:
        """The acknowledged responder travels, serves on scene and travels back."""
        env = self.env
        responder = self.responders[i]
        distance = math.hypot(responder.x - incident.x, responder.y - incident.y)
        travel = travel_minutes(distance, responder.speed_kmh, self.detour_factor)
        if travel > 0:
            yield env.timeout(travel)
        incident.arrived = env.now
        if incident.on_arrival is not None:
            incident.on_arrival(incident)
        service = float(self.rng.exponential(incident.service_min))
        yield env.timeout(service)
        incident.done = env.now
        if incident.finished is not None:
            incident.finished.succeed(env.now)
        if travel > 0:
            yield env.timeout(travel)

    def utilisation(self, horizon_min: float) -> dict[str, float]:
        """Busy share of on-shift time per role (jobs still running counted up to now)."""
        busy: dict[str, float] = {}
        shift: dict[str, float] = {}
        free = self.free
        for i, r in enumerate(self.responders):
            extra = 0.0 if free[i] else self.env.now - self.busy_since[i]
            busy[r.role] = busy.get(r.role, 0.0) + self.busy_minutes[i] + extra
            length = (r.shift[1] - r.shift[0]) % 1440.0 or 1440.0
            shift[r.role] = shift.get(r.role, 0.0) + horizon_min * min(1440.0, length) / 1440.0
        return {role: min(1.0, busy[role] / shift[role]) for role in busy if shift[role] > 0}


def _answered(calls: list[Call], responder: int, now: float) -> None:
    """Mark the responder's latest unanswered call answered at ``now``."""
    for call in reversed(calls):
        if call.responder == responder:
            if math.isnan(call.answered):
                call.answered = now
            return
