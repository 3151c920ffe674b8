"""The plain-SimPy reference model of the lighting side: the oracle and the speed baseline.

Owns: a model written the naive way a planner would write it without Numba: one SimPy process
per lamp, waking every minute, asking the gateway's *plain-Python* policy functions for the
lamp's level (``night_switch_minutes`` once per night, then ``program_level``, ``lamp_level``
and ``lamp_power_w`` each minute) and adding up energy. It sees the same motion arrivals as the
kernel (``twin.kernels.arrivals.lamp_arrivals``, common random numbers) and the same outage
intervals, so for the same seed it must give the same switch minutes, lit minutes and energy.

Must not import: twin.sim (the reference is independent of the dispatch model). It uses the
kernels only to obtain the shared random arrival stream.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
from dataclasses import dataclass
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
from edge_agent.policy.sun import ZENITH_CIVIL, sun_event_minute
from twin.kernels.arrivals import lamp_arrivals


@dataclass
class ReferenceResult:
    energy_wmin: np.ndarray  # per lamp
    lit_minutes: np.ndarray
    dark_minutes: np.ndarray
    dark_lit_minutes: np.ndarray
    arrivals: np.ndarray
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


def run_reference(
    seed: int,
    first_day: int,
    days: int,
    latitude: float,
    longitude: float,
    utc_offsets: list[float],
    lamps: list[dict[str, Any]],
    programs: list[dict[str, Any]],
    rates_per_hour: np.ndarray,
    outages: list[list[tuple[float, float]]],
) -> ReferenceResult:
    """Simulate ``days`` nights minute by minute for each lamp (see module docstring).

    ``lamps[i]``: {"program", "area", "rated_w", "standby_w"}; ``programs[p]``: the fields of a
    ``CompiledProgram`` as plain Python values (tuples). Twin minute 0 is local noon of
    ``first_day``; ``outages[i]`` are [start, end) twin minutes when lamp ``i`` is failed.
    """
    env = simpy.Environment()
    n = len(lamps)
    result = ReferenceResult(
        energy_wmin=np.zeros(n),
        lit_minutes=np.zeros(n, dtype=np.int64),
        dark_minutes=np.zeros(n, dtype=np.int64),
        dark_lit_minutes=np.zeros(n, dtype=np.int64),
        arrivals=np.zeros(n, dtype=np.int64),
        switch_on=np.full((n, days), -1, dtype=np.int64),
        switch_off=np.full((n, days), -1, dtype=np.int64),
        lamp_minutes=n * days * 1440,
    )

    def lamp(i: int) -> Generator[simpy.Event, Any, None]:
        spec = lamps[i]
        prog = programs[spec["program"]]
        # The program's lit window each night, to get the shared arrival stream.
        windows = []
        darkness = []  # civil dusk to civil dawn, night minutes (polar nights not handled)
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
            dusk = sun_event_minute(first_day + night, latitude, longitude, utc_offsets[night], ZENITH_CIVIL, False)
            dawn = sun_event_minute(
                first_day + night + 1, latitude, longitude, utc_offsets[night + 1], ZENITH_CIVIL, True
            )
            windows.append((on, off))
            darkness.append((math.ceil((dusk - 720.0) % 1440.0), math.ceil((dawn - 720.0) % 1440.0)))
        first = np.zeros(days, dtype=np.int64)
        end = np.zeros(days, dtype=np.int64)
        for night, (on, off) in enumerate(windows):
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
            if lit:
                first[night], end[night] = lit[0], lit[-1] + 1
        arrivals = list(lamp_arrivals(seed, i, rates_per_hour[spec["area"]], first, end))
        result.arrivals[i] = len(arrivals)
        boost_until = -1.0
        energy = 0.0
        while env.now < days * 1440:
            t = int(env.now)
            night, k = divmod(t, 1440)
            minute_of_day = (720.0 + k) % 1440.0
            on, off = windows[night]
            while arrivals and arrivals[0] <= t:
                boost_until = max(boost_until, math.ceil(arrivals.pop(0)) + prog["boost_minutes"])
            failed = any(s <= t < e for s, e in outages[i])
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
