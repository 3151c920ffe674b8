"""The plain-SimPy reference model of the lighting side: the oracle and the speed baseline.

Owns: a model written the naive way a planner would write it without Numba: one SimPy process
per lamp, waking every minute, asking the gateway's *plain-Python* policy functions for the
lamp's level (``night_switch_minutes`` once per night, then ``program_level``, ``lamp_level``
and ``lamp_power_w`` each minute) and adding up energy.

Its randomness is its own: motion arrivals (a Poisson process with the scenario's hourly rates,
drawn by thinning with Python's ``random``) and lamp failures (the scenario's hazard: an
exponential electronics term and a Weibull wear-out term drawn by rejection from the lamp's
age; exponential repair delays) never come from the kernels' streams, so kernel and reference
agree only in distribution (tests/twin/test_reference.py). Given the same fixed inputs
(``arrivals``, ``outages``: a file both read, :func:`read_fixed_inputs`) they agree exactly.

Must not import: twin.kernels, twin.replication, twin.sim (anything that imports the kernels):
it shares the scenario's inputs with the kernels, never their code (ARCHITECTURE.md).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import simpy

from edge_agent.policy.lighting import (
    lamp_level,
    lamp_power_w,
    night_switch_minutes,
    program_level,
)
from edge_agent.policy.model import Policy
from edge_agent.policy.programs import compile_programs
from edge_agent.policy.sun import SUN_CROSSES, ZENITH_CIVIL, sun_event

Outages = list[list[tuple[float, float]]]


@dataclass(frozen=True)
class FailureModel:
    """The scenario's failure hazard and a repair delay, in hours (docs/DOMAIN.md#failures)."""

    driver_mtbf_h: float
    wearout_shape: float
    wearout_scale_h: float
    repair_mean_h: float


@dataclass
class ReferenceResult:
    energy_wmin: np.ndarray  # per lamp
    lit_minutes: np.ndarray
    dark_minutes: np.ndarray
    dark_lit_minutes: np.ndarray
    arrivals: np.ndarray
    failures: np.ndarray  # failures within the horizon, per lamp
    switch_on: np.ndarray  # (L, N) first lit night-minute, -1 if none
    switch_off: np.ndarray  # (L, N) one past the last lit night-minute
    lamp_minutes: int


def reference_programs(policy: Policy, names: Sequence[str]) -> list[dict[str, Any]]:
    """The programs named (in kernel order), as the plain dicts ``run_reference`` takes."""
    compiled = compile_programs(policy)
    return [
        {
            "on_kind": c.on_kind,
            "on_value": c.on_value,
            "off_kind": c.off_kind,
            "off_value": c.off_value,
            "base_level": c.base_level,
            "step_minutes": c.step_minutes,
            "step_levels": c.step_levels,
            "n_steps": c.n_steps,
            "boost_level": c.boost_level,
            "boost_minutes": c.boost_minutes,
        }
        for c in (compiled[name] for name in names)
    ]


def read_fixed_inputs(path: str | Path, n_lamps: int) -> tuple[list[list[float]], Outages]:
    """The reference's own reader of a fixed input file: (arrivals, outages) per lamp.

    The file (JSON) holds ``{"lamps": [{"arrivals": [minute, ...], "outages": [[failed,
    repaired], ...]}, ...]}`` in absolute twin minutes (twin.fixed_inputs writes it).
    """
    data = json.loads(Path(path).read_text())
    lamps = data["lamps"]
    if len(lamps) != n_lamps:
        raise ValueError(f"{path}: {len(lamps)} lamps in the file, the district has {n_lamps}")
    arrivals = [[float(t) for t in lamp["arrivals"]] for lamp in lamps]
    outages = [[(float(a), float(b)) for a, b in lamp["outages"]] for lamp in lamps]
    return arrivals, outages


def _clock_hour(t: float) -> int:
    """Local clock hour at twin minute ``t`` (twin minute 0 is local noon)."""
    return int(((720.0 + t) % 1440.0) // 60.0)


def draw_arrivals(rng: random.Random, rates_per_hour: Sequence[float], windows: list[tuple[int, int]]) -> list[float]:
    """Poisson arrivals (absolute twin minutes) within each night's ``[first, end)`` lit minutes.

    Thinning (Lewis-Shedler): candidates at the highest hourly rate, each kept with probability
    rate(hour) / highest. A different method from the kernel's (exponential gaps restarted at
    each hour boundary); the same process in distribution.
    """
    top = max(rates_per_hour)
    out: list[float] = []
    if top <= 0.0:
        return out
    for night, (first, end) in enumerate(windows):
        if end <= first:
            continue
        t = night * 1440.0 + first
        stop = night * 1440.0 + end
        while True:
            t += rng.expovariate(top / 60.0)
            if t >= stop:
                break
            if rng.random() * top < rates_per_hour[_clock_hour(t)]:
                out.append(t)
    return out


def _weibull_residual(rng: random.Random, age_h: float, shape: float, scale_h: float) -> float:
    """Remaining life of a Weibull item that survived to ``age_h``: draw until one outlives it."""
    for _ in range(1_000_000):
        life = rng.weibullvariate(scale_h, shape)
        if life > age_h:
            return life - age_h
    raise RuntimeError(f"no Weibull({shape}, {scale_h}) life beyond age {age_h} h in a million draws")


def draw_outages(
    rng: random.Random, age_h: float, model: FailureModel, horizon_min: float
) -> list[tuple[float, float]]:
    """Failure and repair times of one lamp: first failure from its age, then new lamps."""
    out: list[tuple[float, float]] = []
    t = 0.0
    age = age_h
    while True:
        electronics = rng.expovariate(1.0 / model.driver_mtbf_h)
        wearout = _weibull_residual(rng, age, model.wearout_shape, model.wearout_scale_h)
        t += min(electronics, wearout) * 60.0
        if t >= horizon_min:
            return out
        repair = rng.expovariate(1.0 / model.repair_mean_h) * 60.0
        out.append((t, t + repair))
        t += repair
        age = 0.0


def run_reference(
    seed: int,
    first_day: int,
    days: int,
    latitude: float,
    longitude: float,
    utc_offsets: list[float],
    lamps: list[dict[str, Any]],
    programs: list[dict[str, Any]],
    rates_per_hour: np.ndarray | Sequence[Sequence[float]],
    outages: Outages | None = None,
    *,
    failures: FailureModel | None = None,
    arrivals: list[list[float]] | None = None,
) -> ReferenceResult:
    """Simulate ``days`` nights minute by minute for each lamp (see module docstring).

    ``lamps[i]``: {"program", "area", "rated_w", "standby_w"} and, with ``failures``,
    "age_h"; ``programs[p]``: the fields of a ``CompiledProgram`` as plain Python values
    (tuples). Twin minute 0 is local noon of ``first_day``.

    Failures: ``outages[i]`` ([start, end) twin minutes) if given, else drawn from ``failures``
    (seeded by ``seed``), else none. Motion: ``arrivals[i]`` (sorted twin minutes) if given,
    else drawn from ``rates_per_hour[area]`` (seeded by ``seed``).
    """
    env = simpy.Environment()
    n = len(lamps)
    horizon = days * 1440
    result = ReferenceResult(
        energy_wmin=np.zeros(n),
        lit_minutes=np.zeros(n, dtype=np.int64),
        dark_minutes=np.zeros(n, dtype=np.int64),
        dark_lit_minutes=np.zeros(n, dtype=np.int64),
        arrivals=np.zeros(n, dtype=np.int64),
        failures=np.zeros(n, dtype=np.int64),
        switch_on=np.full((n, days), -1, dtype=np.int64),
        switch_off=np.full((n, days), -1, dtype=np.int64),
        lamp_minutes=n * horizon,
    )

    def lamp(i: int) -> Generator[simpy.Event, Any, None]:
        spec = lamps[i]
        prog = programs[spec["program"]]
        rng = random.Random(seed * 1_000_003 + i)  # this lamp's own stream
        windows = []
        darkness = []  # civil dusk to civil dawn, night minutes; empty if either does not happen
        for night in range(days):
            on, off = night_switch_minutes(
                first_day + night,
                latitude,
                longitude,
                utc_offsets[night],
                prog["on_kind"],
                prog["on_value"],
                prog["off_kind"],
                prog["off_value"],
            )
            dusk, dusk_state = sun_event(
                first_day + night, latitude, longitude, utc_offsets[night], ZENITH_CIVIL, False
            )
            dawn, dawn_state = sun_event(
                first_day + night + 1, latitude, longitude, utc_offsets[night + 1], ZENITH_CIVIL, True
            )
            windows.append((on, off))
            if dusk_state == SUN_CROSSES and dawn_state == SUN_CROSSES:
                darkness.append((math.ceil((dusk - 720.0) % 1440.0), math.ceil((dawn - 720.0) % 1440.0)))
            else:
                darkness.append((0, 0))
        lit_window = []  # each night's first and one-past-last lit minute (where motion is drawn)
        for on, off in windows:
            lit = [
                k
                for k in range(1440)
                if program_level(
                    (720.0 + k) % 1440.0,
                    on,
                    off,
                    prog["base_level"],
                    prog["step_minutes"],
                    prog["step_levels"],
                    prog["n_steps"],
                )
                > 0.0
            ]
            lit_window.append((lit[0], lit[-1] + 1) if lit else (0, 0))
        if arrivals is not None:
            passers = [t for t in arrivals[i] if 0.0 <= t < horizon]
        else:
            passers = draw_arrivals(rng, list(rates_per_hour[spec["area"]]), lit_window)
        if outages is not None:
            down = outages[i]
        elif failures is not None:
            down = draw_outages(rng, spec["age_h"], failures, float(horizon))
        else:
            down = []
        result.arrivals[i] = len(passers)
        result.failures[i] = sum(1 for start, _ in down if start < horizon)
        boost_until = -1.0
        energy = 0.0
        while env.now < horizon:
            t = int(env.now)
            night, k = divmod(t, 1440)
            minute_of_day = (720.0 + k) % 1440.0
            on, off = windows[night]
            while passers and passers[0] <= t:
                seen = passers.pop(0)
                # An arrival boosts minutes ceil(seen) on, within its own night (nights start at noon).
                end_of_its_night = (seen // 1440.0 + 1.0) * 1440.0
                boost_until = max(boost_until, min(math.ceil(seen) + prog["boost_minutes"], end_of_its_night))
            failed = any(s <= t < e for s, e in down)
            program = program_level(
                minute_of_day,
                on,
                off,
                prog["base_level"],
                prog["step_minutes"],
                prog["step_levels"],
                prog["n_steps"],
            )
            level = 0.0 if failed else lamp_level(program, t < boost_until, prog["boost_level"], -1.0)
            energy += lamp_power_w(level, spec["rated_w"], spec["standby_w"])
            dark = darkness[night][0] <= k < darkness[night][1]
            if level > 0.0:
                result.lit_minutes[i] += 1
                if result.switch_on[i, night] < 0:
                    result.switch_on[i, night] = k
                result.switch_off[i, night] = k + 1
            if dark:
                result.dark_minutes[i] += 1
                if level > 0.0:
                    result.dark_lit_minutes[i] += 1
            yield env.timeout(1)
        result.energy_wmin[i] = energy

    for i in range(n):
        env.process(lamp(i))
    env.run()
    return result
