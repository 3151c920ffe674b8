"""The district's discrete events for one replication: incidents, lamp failures, repairs, uplinks.

Owns: the SimPy processes around the ``Dispatcher``: incident sources (wearable SOS and falls by
resident, district-wide reports such as broken manhole covers, by hour of day), lamp failures
(times to failure from the failure kernel), their detection by gateways (a dark lamp is seen at
the next telemetry poll while its program has it lit), the repair dispatched along the policy's
maintenance chain, the lamp restored when the repair is done and its next failure drawn from
there; gateway uplink outages (alternating up/down, exponential), and north-bound message load.

The seam with the lighting kernel: this module produces each lamp's outage intervals (absolute
twin minutes, CSR arrays); ``simulate_lighting`` then computes levels and energy with them.
Lamp failures do not depend on lighting, so the two run one after the other with no chunking.

Must not import: numba, twin.kernels (arrays come in as numpy), edge_agent.agent/engine/transports.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import numpy as np
import simpy

from edge_agent.policy.dispatch_state import parse_shift
from twin.district import DistrictArrays
from twin.scenario import (
    AREAS,
    IncidentType,
    LoadedScenario,
    chain_ack_timeout_minutes,
    chain_channel_starts,
    chain_resolve_timeout_minutes,
    incident_chain,
)
from twin.sim.dispatch import ChainSpec, Dispatcher, Incident, ResponderSpec
from twin.sim.reach import reach_from_scenario


@dataclass
class WorldResult:
    incidents: list[Incident]
    outage_ptr: np.ndarray
    outage_start: np.ndarray
    outage_end: np.ndarray
    failures: int
    repair_hours: list[float]
    utilisation: dict[str, float]
    escalations: int
    messages_total: float
    msgs_per_min_peak: float
    backlog_max: float
    responders: list[ResponderSpec]


class Uplinks:
    """Per-gateway uplink down intervals, drawn up front (seeded)."""

    def __init__(
        self, n: int, horizon: float, mtbf_min: float, outage_mean_min: float, rng: np.random.Generator
    ) -> None:
        self.starts: list[list[float]] = []
        self.ends: list[list[float]] = []
        for _ in range(n):
            s: list[float] = []
            e: list[float] = []
            t = float(rng.exponential(mtbf_min))
            while t < horizon:
                d = float(rng.exponential(outage_mean_min))
                s.append(t)
                e.append(t + d)
                t += d + float(rng.exponential(mtbf_min))
            self.starts.append(s)
            self.ends.append(e)

    def ready(self, gateway: int, t: float) -> float:
        """Earliest time >= t when the gateway's uplink is up."""
        s = self.starts[gateway]
        k = bisect.bisect_right(s, t) - 1
        if k >= 0 and t < self.ends[gateway][k]:
            return self.ends[gateway][k]
        return t


def _responders(loaded: LoadedScenario, district: DistrictArrays, rng: np.random.Generator) -> list[ResponderSpec]:
    spec = loaded.spec
    out: list[ResponderSpec] = []
    radius = spec.district.town_radius_m
    for group in spec.responders:
        shift = parse_shift(group.shift)

        def add(x: float, y: float, group: Any = group, shift: tuple[float, float] = shift) -> None:
            out.append(ResponderSpec(float(x), float(y), group.role, group.speed_kmh, shift, group.local))

        for v in range(len(district.village_x)):
            for _ in range(group.per_village):
                add(district.village_x[v] + rng.normal(0, 100), district.village_y[v] + rng.normal(0, 100))
        for _ in range(group.town):
            r = radius * math.sqrt(rng.random())
            a = rng.random() * 2 * math.pi
            add(r * math.cos(a), r * math.sin(a))
        for _ in range(group.centre):
            add(0.0, 0.0)
    return out


def _place(
    area: str, district: DistrictArrays, radius: float, village_radius: float, rng: np.random.Generator
) -> tuple[float, float]:
    if area == "town" or len(district.village_x) == 0:
        r = radius * math.sqrt(rng.random())
    else:
        r = village_radius * math.sqrt(rng.random())
    a = rng.random() * 2 * math.pi
    if area == "town" or len(district.village_x) == 0:
        return r * math.cos(a), r * math.sin(a)
    v = int(rng.integers(len(district.village_x)))
    return district.village_x[v] + r * math.cos(a), district.village_y[v] + r * math.sin(a)


def _nearest_gateway(district: DistrictArrays, x: float, y: float) -> int:
    if district.gateway_x.size == 0:
        return 0
    return int(np.argmin(np.hypot(district.gateway_x - x, district.gateway_y - y)))


def run_world(
    loaded: LoadedScenario,
    district: DistrictArrays,
    ttf_h: np.ndarray,
    lit_on_abs: np.ndarray,
    lit_off_abs: np.ndarray,
    days: int,
    rng: np.random.Generator,
) -> WorldResult:
    """Simulate ``days`` nights of incidents, failures and repairs (see module docstring).

    ``lit_on_abs[p, n]``/``lit_off_abs[p, n]`` are program ``p``'s lit window of night ``n`` in
    absolute twin minutes (used to know when a gateway can see a dark lamp).
    """
    spec = loaded.spec
    policy = loaded.policy
    env = simpy.Environment()
    horizon = days * 1440.0
    n_gw = max(1, district.gateway_x.size)
    uplinks = Uplinks(n_gw, horizon, spec.gateways.uplink_mtbf_hours * 60.0, spec.gateways.uplink_outage_minutes, rng)
    responders = _responders(loaded, district, rng)
    chains = {
        name: ChainSpec(
            tuple(c.roles),
            chain_ack_timeout_minutes(policy, name),
            c.repeat_last,
            chain_resolve_timeout_minutes(policy, name),
            chain_channel_starts(policy, name),
        )
        for name, c in policy.chains.items()
    }
    dispatcher = Dispatcher(
        env,
        responders,
        chains,
        rng,
        reach=reach_from_scenario(spec),
        detour_factor=spec.dispatch.detour_factor,
        uplink_ready=uplinks.ready,
    )
    incidents: list[Incident] = []
    radius = spec.district.town_radius_m

    def spawn(incident: Incident) -> None:
        incidents.append(incident)
        env.process(dispatcher.respond(incident))

    def source(name: str, area: str, per_day: float) -> Generator[simpy.Event, Any, None]:
        kind = spec.incidents[name]
        chain = incident_chain(name, kind, policy)
        assert chain is not None  # checked at load
        weights = np.array(kind.hourly if kind.hourly is not None else [1.0] * 24)
        weights = weights / weights.sum()
        for day in range(days):
            count = int(rng.poisson(per_day))
            # Times within the local calendar day that starts at twin minute day*1440 - 720.
            times = np.sort(rng.choice(24, size=count, p=weights) * 60.0 + rng.random(count) * 60.0)
            for clock in times:
                t = day * 1440.0 - 720.0 + float(clock)
                if t < 0 or t >= horizon:
                    continue
                if t > env.now:
                    yield env.timeout(t - env.now)
                if name in ("sos", "fall") or kind.per_resident_year > 0:
                    x, y = _place(area, district, radius, spec.district.village_radius_m, rng)
                else:
                    j = int(rng.integers(district.n_lamps)) if district.n_lamps else 0
                    x = float(district.lamp_x[j]) if district.n_lamps else 0.0
                    y = float(district.lamp_y[j]) if district.n_lamps else 0.0
                    area = AREAS[int(district.lamp_area[j])] if district.n_lamps else "town"
                gateway = _nearest_gateway(district, x, y)
                spawn(Incident(name, area, x, y, chain, env.now, kind.service_minutes, gateway))

    for name, kind in spec.incidents.items():
        if name == "lamp_outage":
            continue
        if kind.per_resident_year > 0:
            for area, residents in spec.residents.items():
                rate = residents * kind.per_resident_year / 365.0
                if rate > 0:
                    env.process(source(name, area, rate))
        if kind.per_day > 0:
            env.process(source(name, "town", kind.per_day))

    # Lamp failures -> detection -> repair along the maintenance chain -> next failure.
    outage_kind = spec.incidents.get("lamp_outage")
    outage_chain = incident_chain("lamp_outage", outage_kind, policy) if outage_kind else None
    if outage_chain is None:
        outage_chain = incident_chain("lamp_outage", IncidentType(), policy)
    outages: list[list[tuple[float, float]]] = [[] for _ in range(district.n_lamps)]
    repair_hours: list[float] = []
    poll = spec.failures.detect_poll_minutes
    repair_mean = spec.failures.repair_minutes

    def detection_time(lamp: int, t: float) -> float:
        p = int(district.lamp_program[lamp])
        n = max(0, int(t // 1440.0))
        while n < lit_on_abs.shape[1]:
            on, off = lit_on_abs[p, n], lit_off_abs[p, n]
            if off > on and t < off:
                return float(max(t, on)) + float(rng.random()) * poll
            n += 1
        return math.inf

    def lamp_life(lamp: int) -> Generator[simpy.Event, Any, None]:
        t = float(ttf_h[lamp, 0]) * 60.0
        j = 0
        while t < horizon:
            yield env.timeout(t - env.now)
            failed = env.now
            seen = detection_time(lamp, failed)
            if seen >= horizon or outage_chain is None:
                outages[lamp].append((failed, math.inf))
                return
            yield env.timeout(seen - env.now)
            x, y = float(district.lamp_x[lamp]), float(district.lamp_y[lamp])
            incident = Incident(
                "lamp_outage",
                AREAS[int(district.lamp_area[lamp])],
                x,
                y,
                outage_chain,
                failed,
                repair_mean,
                int(district.lamp_gateway[lamp]),
            )
            incident.finished = env.event()
            spawn(incident)
            restored = yield incident.finished
            outages[lamp].append((failed, float(restored)))
            repair_hours.append((float(restored) - failed) / 60.0)
            j += 1
            if j >= ttf_h.shape[1]:
                return
            t = float(restored) + float(ttf_h[lamp, j]) * 60.0

    for lamp in range(district.n_lamps):
        if ttf_h[lamp, 0] * 60.0 < horizon:
            env.process(lamp_life(lamp))
    env.run(until=horizon)

    ptr = np.zeros(district.n_lamps + 1, dtype=np.int64)
    starts: list[float] = []
    ends: list[float] = []
    for lamp, items in enumerate(outages):
        for s, e in items:
            starts.append(s)
            ends.append(e)
        ptr[lamp + 1] = len(starts)
    failures = len(starts)

    # North-bound message load: telemetry and heartbeats (constant), incident traffic, and the
    # backlog each gateway flushes when its uplink returns.
    gw_lamps = np.bincount(district.lamp_gateway, minlength=n_gw).astype(float)
    wearables = float(sum(spec.residents.values()))
    per_min = gw_lamps / spec.gateways.telemetry_minutes + (wearables / n_gw / spec.gateways.wearable_heartbeat_minutes)
    incident_msgs = float(dispatcher.messages + 3 * len(incidents))
    total = float(per_min.sum() * horizon + incident_msgs)
    backlog = 0.0
    for g in range(n_gw):
        for s, e in zip(uplinks.starts[g], uplinks.ends[g], strict=True):
            backlog = max(backlog, per_min[g] * (min(e, horizon) - s))
    peak = float(max(per_min.max(initial=0.0), backlog))
    return WorldResult(
        incidents=incidents,
        outage_ptr=ptr,
        outage_start=np.array(starts, dtype=np.float64),
        outage_end=np.array(ends, dtype=np.float64),
        failures=failures,
        repair_hours=repair_hours,
        utilisation=dispatcher.utilisation(horizon),
        escalations=dispatcher.escalations,
        messages_total=total,
        msgs_per_min_peak=peak,
        backlog_max=backlog,
        responders=responders,
    )
