"""Replay: the gateway's lamp levels, minute by minute over a year, equal the twin's tables.

One lamp per program of each shipped Naxi policy, decided by the gateway's own code path (the
engine's ``LightingController.tick`` on a ``ManualClock``, its ``LampSet`` changes applied to the
lamp's level, no motion) against the twin's per-program level table (``prepare_lighting``:
``switch_table`` and ``program_levels``) for the same nights.

Cost: the gateway recomputes the night's sun events for each lamp each minute (~20 us), so a
full year is ~10 s per program. The default test ticks every minute of every 14th night and, on
all other nights, the minutes around every change in the twin's table and every 30th minute
(a missed change would show as a mismatch at the next tick); the ``slow`` test ticks every
minute of the year for the standard policy.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from edge_agent.clock import ManualClock
from edge_agent.engine.lighting import LampState, LightingController
from edge_agent.policy.programs import compile_programs
from twin.replication import prepare_lighting
from twin.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "scenarios" / "naxi-3000.toml"
POLICIES = sorted((ROOT / "scenarios" / "policies").glob("naxi-*.toml"))
NIGHTS = 365


def _minutes_to_tick(levels: np.ndarray, night: int, full: bool) -> list[int]:
    """Every minute, or every 30th and those within 3 of a change in any program's table."""
    if full:
        return list(range(1440))
    ticks = set(range(0, 1440, 30))
    for row in levels[:, night]:
        for c in np.flatnonzero(np.diff(row)) + 1:
            ticks.update(range(max(0, c - 3), min(1440, c + 4)))
    return sorted(ticks)


async def _replay(policy: Path, every_night: bool) -> int:
    loaded = load_scenario(SCENARIO, policy)
    inputs = prepare_lighting(loaded, NIGHTS)
    site = loaded.spec.site
    zone = ZoneInfo(site.timezone)
    programs = compile_programs(loaded.policy)
    names = list(inputs.programs.names)
    lamps = {name: LampState(f"lamp-{name}", name, None, programs[name]) for name in names}
    controller = LightingController(lamps, site.latitude, site.longitude, zone)
    first = dt.date(1970, 1, 1) + dt.timedelta(days=inputs.first_day)
    noon = dt.datetime(first.year, first.month, first.day, 12, tzinfo=zone).timestamp()
    clock = ManualClock(start=noon)
    level = dict.fromkeys(names, 0.0)
    compared = 0
    for night in range(NIGHTS):
        full = every_night or night % 14 == 0
        for k in _minutes_to_tick(inputs.levels, night, full):
            target = noon + (night * 1440 + k) * 60.0
            await clock.advance(target - clock.now(), settle=0)
            for change in controller.tick(clock.now()):
                level[change.lamp.removeprefix("lamp-")] = change.level
            for p, name in enumerate(names):
                expected = inputs.levels[p, night, k]
                assert level[name] == expected, (policy.name, name, night, k, level[name], expected)
                compared += 1
    return compared


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.name)
async def test_gateway_levels_equal_twin_tables_over_a_year(policy: Path) -> None:
    compared = await _replay(policy, every_night=False)
    assert compared > 2 * 40_000


@pytest.mark.slow
async def test_gateway_levels_equal_twin_tables_every_minute_of_a_year() -> None:
    compared = await _replay(ROOT / "scenarios" / "policies" / "naxi-standard.toml", every_night=True)
    assert compared == 2 * NIGHTS * 1440
