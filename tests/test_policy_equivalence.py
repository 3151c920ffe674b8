"""One policy, one decision: the gateway's plain-Python decisions equal the twin's compiled ones.

The lighting level and the responder choice are computed by the same functions in
edge_agent/policy; the twin compiles them with Numba. These tests hold the two together:
over randomized inputs (hypothesis), and over a simulated year of the shipped Naxi policy,
minute by minute, against the twin's own level tables.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

# isort: off
import twin  # first: it points Numba's cache at a directory keyed by the policy's source

# isort: on
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

import twin.kernels  # noqa: F401 - registers the policy functions with numba
from edge_agent.policy.dispatch import choose_responder
from edge_agent.policy.lighting import SWITCH_CIVIL, SWITCH_CLOCK, SWITCH_SUN, decide_level
from edge_agent.policy.programs import compile_programs
from twin.replication import prepare_lighting
from twin.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[1]


@njit(cache=True)
def decide_level_compiled(day, minute, lat, lon, offset, on_kind, on_value, off_kind, off_value, base,  # type: ignore[no-untyped-def]
                          step_minutes, step_levels, n_steps, boost, boost_level, override):  # fmt: skip
    return decide_level(day, minute, lat, lon, offset, on_kind, on_value, off_kind, off_value, base,
                        step_minutes, step_levels, n_steps, boost, boost_level, override)  # fmt: skip


@njit(cache=True)
def choose_responder_compiled(x, y, rx, ry, available, rank, n, step):  # type: ignore[no-untyped-def]
    return choose_responder(x, y, rx, ry, available, rank, n, step)


switch = st.one_of(
    st.tuples(st.sampled_from([SWITCH_SUN, SWITCH_CIVIL]), st.floats(-90, 90)),
    st.tuples(st.just(SWITCH_CLOCK), st.integers(0, 1439).map(float)),
)
steps = st.lists(st.tuples(st.integers(0, 1439).map(float), st.integers(0, 100).map(float)), max_size=6)


@settings(max_examples=400, deadline=None)
@given(
    day=st.integers(19_000, 22_000),
    minute=st.floats(0, 1439.99),
    lat=st.floats(18, 53),
    lon=st.floats(73, 135),
    on=switch,
    off=switch,
    base=st.integers(0, 100).map(float),
    program_steps=steps,
    boost=st.booleans(),
    boost_level=st.integers(0, 100).map(float),
    override=st.sampled_from([-1.0, 0.0, 35.0, 100.0, 150.0]),
)
def test_lamp_level_gateway_equals_twin_on_random_inputs(  # type: ignore[no-untyped-def]
    day, minute, lat, lon, on, off, base, program_steps, boost, boost_level, override
) -> None:
    minutes = tuple(m for m, _ in program_steps)
    levels = tuple(level for _, level in program_steps)
    args = (day, minute, lat, lon, 480.0, on[0], on[1], off[0], off[1], base)
    gateway = decide_level(*args, minutes, levels, len(minutes), boost, boost_level, override)
    compiled = decide_level_compiled(*args, np.array(minutes or (0.0,)), np.array(levels or (0.0,)), len(minutes),
                                     boost, boost_level, override)  # fmt: skip
    assert gateway == compiled


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_responder_choice_gateway_equals_twin_on_random_inputs(data) -> None:  # type: ignore[no-untyped-def]
    n = data.draw(st.integers(1, 12))
    coords = st.floats(-20_000, 20_000)
    rx = tuple(data.draw(coords) for _ in range(n))
    ry = tuple(data.draw(coords) for _ in range(n))
    available = tuple(data.draw(st.booleans()) for _ in range(n))
    rank = tuple(data.draw(st.integers(-1, 3)) for _ in range(n))
    x, y, step = data.draw(coords), data.draw(coords), data.draw(st.integers(0, 3))
    gateway = choose_responder(x, y, rx, ry, available, rank, n, step)
    compiled = choose_responder_compiled(x, y, np.array(rx), np.array(ry), np.array(available), np.array(rank), n, step)
    assert gateway == compiled


def test_a_year_of_naxi_levels_gateway_equals_twin_minute_by_minute() -> None:
    """Every night of a year: the twin's level table (its kernels) against the gateway's whole
    per-minute decision. Every minute on one night a week, every 7th minute on the others."""
    loaded = load_scenario(ROOT / "scenarios" / "naxi-3000.toml")
    nights = 365
    inputs = prepare_lighting(loaded, nights)
    compiled = compile_programs(loaded.policy)
    site = loaded.spec.site
    tz = loaded.spec.site.timezone
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(tz)
    epoch = dt.date(1970, 1, 1)
    compared = 0
    for p, name in enumerate(inputs.programs.names):
        program = compiled[name]
        for night in range(nights):
            stride = 1 if night % 7 == 0 else 7
            for k in range(0, 1440, stride):
                day = inputs.first_day + night + (1 if 720 + k >= 1440 else 0)
                minute = float((720 + k) % 1440)
                date = epoch + dt.timedelta(days=day)
                offset = dt.datetime.combine(date, dt.time(12), zone).utcoffset()
                assert offset is not None
                expected = program.level_at(day, minute, site.latitude, site.longitude, offset.total_seconds() / 60)
                assert inputs.levels[p, night, k] == expected, (name, night, k)
                compared += 1
    assert compared > 100_000
