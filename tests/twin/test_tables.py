"""Trust: the shared lighting tables equal the gateway's policy functions called minute by minute.

``twin.kernels.lighting_tables`` builds its per-minute tables piece by piece (``program_level``
once per piece between switch and step minutes, ``lamp_level``/``lamp_power_w`` once per
distinct level, running sums with NumPy). Here every minute of sampled nights is recomputed the
straightforward way, a Python loop calling the policy functions for each minute and adding up in
minute order, at a mid latitude and in the Arctic (polar days and nights), for the shipped
programs plus programs with steps past midnight, a step before switch-on, clock switches and
non-integer levels (so that a different summation order would show). Equality is exact.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import pytest

from edge_agent.policy.lighting import (
    SWITCH_CIVIL,
    SWITCH_CLOCK,
    SWITCH_SUN,
    lamp_level,
    lamp_power_w,
    night_minute,
    night_switch_minutes,
    program_level,
)
from edge_agent.policy.programs import CompiledProgram, compile_programs
from edge_agent.policy.sun import ZENITH_CIVIL, sun_event_minute
from twin.kernels.lighting_tables import (
    REFERENCE_W,
    dark_windows,
    night_tables,
    program_levels,
    sun_table,
    switch_table,
)
from twin.scenario import load_scenario, utc_offsets

SCENARIO = Path(__file__).resolve().parents[2] / "scenarios" / "naxi-3000.toml"
YEAR_START = (dt.date(2025, 1, 1) - dt.date(1970, 1, 1)).days
NIGHTS = 365
SAMPLE = range(0, NIGHTS, 23)  # 16 nights spread over the year, polar day and night included at 69 N


def _programs() -> list[CompiledProgram]:
    shipped = list(compile_programs(load_scenario(SCENARIO).policy).values())
    return [
        *shipped,
        # steps after midnight and one before switch-on (never in force), non-integer levels
        CompiledProgram(
            "odd", SWITCH_SUN, 7.5, SWITCH_CIVIL, -12.25, 83.3, (1020.0, 1380.0, 150.0), (61.7, 33.3, 17.9), 47.7, 3.5
        ),
        CompiledProgram("clock", SWITCH_CLOCK, 1080.5, SWITCH_SUN, -10.0, 100.0, (0.0,), (50.0,), 30.0, 2.0),
        CompiledProgram("morning", SWITCH_CIVIL, 0.0, SWITCH_CLOCK, 390.0, 40.0, (), (), 100.0, 1.0),
    ]  # fmt: skip


def _arrays(programs: list[CompiledProgram]) -> dict[str, np.ndarray]:
    width = max(1, max(p.n_steps for p in programs))
    minutes = np.zeros((len(programs), width))
    levels = np.zeros((len(programs), width))
    for i, p in enumerate(programs):
        minutes[i, : p.n_steps] = p.step_minutes
        levels[i, : p.n_steps] = p.step_levels
    return {
        "on_kind": np.array([p.on_kind for p in programs], dtype=np.int64),
        "on_value": np.array([p.on_value for p in programs]),
        "off_kind": np.array([p.off_kind for p in programs], dtype=np.int64),
        "off_value": np.array([p.off_value for p in programs]),
        "base": np.array([p.base_level for p in programs]),
        "step_minutes": minutes,
        "step_levels": levels,
        "n_steps": np.array([p.n_steps for p in programs], dtype=np.int64),
        "boost": np.array([p.boost_level for p in programs]),
    }


@pytest.mark.parametrize(("lat", "lon", "tz"), [(28.8, 105.4, "Asia/Shanghai"), (69.0, 18.9, "Europe/Oslo")])
def test_tables_equal_the_policy_functions_minute_by_minute(lat: float, lon: float, tz: str) -> None:
    programs = _programs()
    a = _arrays(programs)
    offsets = np.array(utc_offsets(tz, YEAR_START, NIGHTS + 1))
    on, off = switch_table(
        YEAR_START, NIGHTS, lat, lon, offsets, a["on_kind"], a["on_value"], a["off_kind"], a["off_value"]
    )
    levels, first_lit, end_lit = program_levels(on, off, a["base"], a["step_minutes"], a["step_levels"], a["n_steps"])
    dark_start, dark_end = dark_windows(sun_table(YEAR_START, NIGHTS + 1, lat, lon, offsets), NIGHTS)
    unit, unit_sum, boost_prefix, lit, dark_lit, on_k, off_k, keeps = night_tables(
        levels, a["boost"], dark_start, dark_end
    )
    kinds = {"lit nights": 0, "dark nights": 0}
    for n in SAMPLE:
        # civil darkness: dusk of this day to dawn of the next, as night minutes
        dusk = sun_event_minute(YEAR_START + n, lat, lon, float(offsets[n]), ZENITH_CIVIL, False)
        dawn = sun_event_minute(YEAR_START + n + 1, lat, lon, float(offsets[n + 1]), ZENITH_CIVIL, True)
        want_dark = (0.0, 0.0) if math.isnan(dusk) or math.isnan(dawn) else (night_minute(dusk), night_minute(dawn))
        assert (dark_start[n], dark_end[n]) == want_dark
        ds, de = math.ceil(want_dark[0]), math.ceil(want_dark[1])
        for p, prog in enumerate(programs):
            a_on, a_off = night_switch_minutes(
                YEAR_START + n, lat, lon, float(offsets[n]), prog.on_kind, prog.on_value, prog.off_kind, prog.off_value
            )
            assert (on[p, n], off[p, n]) == (a_on, a_off)
            total = 0.0
            extra = 0.0
            flips = 0
            lit_k = []
            for k in range(1440):
                level = program_level((720.0 + k) % 1440.0, a_on, a_off, prog.base_level, prog.step_minutes,
                                      prog.step_levels, prog.n_steps)  # fmt: skip
                assert levels[p, n, k] == level, (p, n, k)
                plain = lamp_level(level, False, prog.boost_level, -1.0)
                boosted = lamp_level(level, True, prog.boost_level, -1.0)
                power = lamp_power_w(plain, REFERENCE_W, 0.0)
                assert unit[p, n, k] == power
                total += power
                extra += lamp_power_w(boosted, REFERENCE_W, 0.0) - power
                assert boost_prefix[p, n, k + 1] == extra
                if plain > 0.0:
                    lit_k.append(k)
                flips += (plain > 0.0) != (boosted > 0.0)
            assert boost_prefix[p, n, 0] == 0.0
            assert flips == 0 and keeps[p]  # a boost never lights a minute the program has dark
            assert unit_sum[p, n] == total
            assert lit[p, n] == len(lit_k)
            assert dark_lit[p, n] == sum(1 for k in lit_k if ds <= k < de)
            assert (on_k[p, n], off_k[p, n]) == ((lit_k[0], lit_k[-1] + 1) if lit_k else (-1, -1))
            assert (first_lit[p, n], end_lit[p, n]) == ((lit_k[0], lit_k[-1] + 1) if lit_k else (0, 0))
            kinds["lit nights" if lit_k else "dark nights"] += 1
    assert kinds["lit nights"] > 0
    if lat > 66.0:
        assert kinds["dark nights"] > 0, "the sample should include polar days (a sun switch-on never fires)"
