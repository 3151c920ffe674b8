"""Responders and dispatch as SimPy processes: choice, acknowledgement, escalation, queueing.

Owns: the ``Dispatcher``. For each incident it walks the policy's responder chain: at chain
step ``k`` it asks ``edge_agent.policy.dispatch.choose_responder`` (the gateway's own function)
for the nearest free, on-shift responder of role ``k``; nobody free -> the next role at once;
nobody free in the whole chain -> the incident waits in a FIFO queue and the next responder of
the chain to come free takes it. A notified responder acknowledges with probability
``ack_probability`` after an exponential delay; no acknowledgement within the chain's
``ack_timeout`` -> escalate to the next role (after the last role: start again, or stay on the
last role when the chain says ``repeat_last``). Responders who are not ``local`` are reached
through the centre, so their notification waits for the incident gateway's uplink.
Then travel (``travel_minutes``: straight line times a detour factor), service on scene,
travel back, free again.

Must not import: numba, twin.kernels, edge_agent.agent/engine/transports.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import simpy

from edge_agent.policy.dispatch import choose_responder, travel_minutes


@dataclass(frozen=True)
class ChainSpec:
    roles: tuple[str, ...]
    ack_timeout_min: float
    repeat_last: bool = False


@dataclass(frozen=True)
class ResponderSpec:
    x: float
    y: float
    role: str
    speed_kmh: float
    shift: tuple[float, float] = (0.0, 1440.0)  # local clock minutes; may wrap midnight
    local: bool = True


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
    on_arrival: Callable[[Incident], None] | None = field(default=None, repr=False)
    finished: simpy.Event | None = field(default=None, repr=False)


def on_shift(shift: tuple[float, float], t: float) -> bool:
    """Whether local clock time of twin minute ``t`` (0 = local noon) is within the shift."""
    start, end = shift
    if end - start >= 1440.0:
        return True
    clock = (720.0 + t) % 1440.0
    if start <= end:
        return start <= clock < end
    return clock >= start or clock < end


class Dispatcher:
    """Dispatch of incidents to responders along the policy's chains (see module docstring)."""

    def __init__(
        self,
        env: simpy.Environment,
        responders: list[ResponderSpec],
        chains: dict[str, ChainSpec],
        rng: np.random.Generator,
        *,
        ack_probability: float = 1.0,
        ack_delay_mean_min: float = 0.0,
        detour_factor: float = 1.0,
        uplink_ready: Callable[[int, float], float] | None = None,
    ) -> None:
        self.env = env
        self.responders = responders
        self.chains = chains
        self.rng = rng
        self.ack_probability = ack_probability
        self.ack_delay_mean_min = ack_delay_mean_min
        self.detour_factor = detour_factor
        self.uplink_ready = uplink_ready
        n = len(responders)
        self.n = n
        self.rx = tuple(r.x for r in responders)
        self.ry = tuple(r.y for r in responders)
        self.free = [True] * n
        self.busy_since = [0.0] * n
        self.busy_minutes = [0.0] * n
        self.ranks = {
            name: tuple(chain.roles.index(r.role) if r.role in chain.roles else -1 for r in responders)
            for name, chain in chains.items()
        }
        self.waiting: deque[tuple[simpy.Event, str]] = deque()
        self.escalations = 0
        self.messages = 0
        for i, r in enumerate(responders):
            if r.shift[1] - r.shift[0] < 1440.0:
                env.process(self._shift_starts(i))

    # -- availability --------------------------------------------------------------------
    def _available(self) -> tuple[bool, ...]:
        now = self.env.now
        return tuple(self.free[i] and on_shift(self.responders[i].shift, now) for i in range(self.n))

    def _take(self, i: int) -> None:
        self.free[i] = False
        self.busy_since[i] = self.env.now

    def _release(self, i: int) -> None:
        self.busy_minutes[i] += self.env.now - self.busy_since[i]
        self.free[i] = True
        self._offer(i)

    def _offer(self, i: int) -> None:
        """Hand a newly free, on-shift responder to the oldest waiting incident it can serve."""
        if not (self.free[i] and on_shift(self.responders[i].shift, self.env.now)):
            return
        for entry in self.waiting:
            event, chain = entry
            if self.ranks[chain][i] >= 0:
                self.waiting.remove(entry)
                self._take(i)
                event.succeed(i)
                return

    def _shift_starts(self, i: int) -> Generator[simpy.Event, Any, None]:
        start = self.responders[i].shift[0]
        while True:
            clock = (720.0 + self.env.now) % 1440.0
            wait = (start - clock) % 1440.0 or 1440.0
            yield self.env.timeout(wait)
            self._offer(i)

    # -- one incident --------------------------------------------------------------------
    def respond(self, incident: Incident) -> Generator[simpy.Event, Any, None]:
        """SimPy process: from notification to the responder back at base."""
        env = self.env
        chain = self.chains[incident.chain]
        ranks = self.ranks[incident.chain]
        last = len(chain.roles) - 1
        incident.notified = env.now
        step = 0
        tried = 0
        while True:
            i = choose_responder(incident.x, incident.y, self.rx, self.ry, self._available(), ranks, self.n, step)
            if i >= 0:
                self._take(i)
            elif tried < last:
                tried += 1
                step = step + 1 if step < last else 0
                self.escalations += 1
                incident.escalations += 1
                continue
            else:
                event = env.event()
                self.waiting.append((event, incident.chain))
                i = yield event
                step = ranks[i]
            tried = 0
            responder = self.responders[i]
            if not responder.local and self.uplink_ready is not None:
                ready = self.uplink_ready(incident.gateway, env.now)
                if ready > env.now:
                    yield env.timeout(ready - env.now)
            self.messages += 2  # notify + (ack or timeout)
            acked = self.rng.random() < self.ack_probability
            delay = float(self.rng.exponential(self.ack_delay_mean_min)) if self.ack_delay_mean_min > 0 else 0.0
            if acked and delay <= chain.ack_timeout_min:
                if delay > 0:
                    yield env.timeout(delay)
                break
            yield env.timeout(chain.ack_timeout_min)
            self._release(i)
            self.escalations += 1
            incident.escalations += 1
            if step < last:
                step += 1
            elif not chain.repeat_last:
                step = 0
        incident.assigned = env.now
        incident.responder = i
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
        self._release(i)

    def utilisation(self, horizon_min: float) -> dict[str, float]:
        """Busy share of on-shift time per role (jobs still running counted up to now)."""
        busy: dict[str, float] = {}
        shift: dict[str, float] = {}
        for i, r in enumerate(self.responders):
            extra = 0.0 if self.free[i] else self.env.now - self.busy_since[i]
            busy[r.role] = busy.get(r.role, 0.0) + self.busy_minutes[i] + extra
            length = (r.shift[1] - r.shift[0]) % 1440.0 or 1440.0
            shift[r.role] = shift.get(r.role, 0.0) + horizon_min * min(1440.0, length) / 1440.0
        return {role: min(1.0, busy[role] / shift[role]) for role in busy if shift[role] > 0}
