"""The lamp node's own sun maths (hardware/firmware/lamp_node/sun.py) under the real
MicroPython unix port agree with the gateway's (edge_agent/policy/sun.py) within a minute on
every day of a year, at several latitudes, so a node left alone switches at dusk all year."""

from __future__ import annotations

import math
import os
import subprocess
from pathlib import Path

import pytest

from edge_agent.policy.lighting import (
    NIGHT_END,
    NIGHT_START,
    SWITCH_CIVIL,
    SWITCH_CLOCK,
    SWITCH_SUN,
    night_switch_minutes,
)
from edge_agent.policy.sun import ZENITH_CIVIL, ZENITH_OFFICIAL, sun_event_minute
from hardware.hil.procs import LAMP_DIR, micropython_binary

pytestmark = [pytest.mark.hil, pytest.mark.timeout(120)]

SCRIPT = Path(__file__).resolve().parents[1] / "micropython" / "node_sun.py"
DAYS_1970_TO_2000 = 10957
FIRST = 9497  # 2026-01-01, days since 2000-01-01


@pytest.mark.parametrize(
    ("lat", "lon", "offset"),
    [(26.87, 100.23, 480), (51.48, 0.0, 0), (-33.87, 151.21, 600), (64.15, -21.94, 0), (0.0, -78.5, -300)],
)
def test_node_sun_matches_the_gateway_over_a_year(lat: float, lon: float, offset: int) -> None:
    exe = micropython_binary()
    if exe is None:
        pytest.skip("micropython unix port not installed")
    env = dict(os.environ, MICROPYPATH=str(LAMP_DIR))
    out = subprocess.run(
        [exe, str(SCRIPT), str(lat), str(lon), str(offset), str(FIRST), "366"],
        capture_output=True, text=True, env=env, check=True, timeout=60,
    ).stdout  # fmt: skip
    worst = 0.0
    lines = out.splitlines()
    assert len(lines) == 366
    for line in lines:
        day, *values = line.split()
        epoch_day = int(day) + DAYS_1970_TO_2000
        ref = [
            sun_event_minute(epoch_day, lat, lon, offset, ZENITH_OFFICIAL, False),
            sun_event_minute(epoch_day, lat, lon, offset, ZENITH_OFFICIAL, True),
            sun_event_minute(epoch_day, lat, lon, offset, ZENITH_CIVIL, False),
            sun_event_minute(epoch_day, lat, lon, offset, ZENITH_CIVIL, True),
        ]
        for got, want in zip((float(v) for v in values), ref, strict=True):
            if math.isnan(want):
                assert math.isnan(got), line
                continue
            worst = max(worst, abs(got - want))
    assert worst < 1.0, f"worst difference {worst:.3f} min"


NIGHT_SCRIPT = Path(__file__).resolve().with_name("mp_node_night.py")


def node_minutes(on: float, off: float) -> tuple[int, int]:
    """The gateway's night (night_switch_minutes) in the node's terms: minutes of day, the
    polar 'off at the next local noon' (lighting.NIGHT_END) as 1440."""
    return round(on) % 1440, (1440 if off >= NIGHT_END else round(off) % 1440)


@pytest.mark.parametrize(
    ("lat", "lon", "offset"),
    [(69.65, 18.96, 60), (78.22, 15.65, 60), (-77.85, 166.67, 720)],  # Tromsø, Longyearbyen, McMurdo
)
@pytest.mark.parametrize(
    "kinds", [(SWITCH_SUN, 10, SWITCH_SUN, -15), (SWITCH_CIVIL, 0, SWITCH_CIVIL, 5), (SWITCH_SUN, 0, SWITCH_CLOCK, 0)]
)
def test_node_polar_rule_matches_the_gateway_over_a_year(
    lat: float, lon: float, offset: int, kinds: tuple[int, int, int, int]
) -> None:
    """Above the polar circles the sun does not set (or rise) for weeks: the node's nights
    follow the gateway's polar rule (edge_agent.policy.lighting.night_switch_minutes) on every
    day of a year, within a minute on ordinary days and exactly on polar ones."""
    exe = micropython_binary()
    if exe is None:
        pytest.skip("micropython unix port not installed")
    env = dict(os.environ, MICROPYPATH=str(LAMP_DIR))
    args = [str(lat), str(lon), str(offset), str(FIRST), "366", *map(str, kinds)]
    out = subprocess.run(
        [exe, str(NIGHT_SCRIPT), *args], capture_output=True, text=True, env=env, check=True, timeout=60
    ).stdout
    lines = out.splitlines()
    assert len(lines) == 366
    polar = 0
    for line in lines:
        day, on, off = (int(v) for v in line.split())
        ref_on, ref_off = night_switch_minutes(day + DAYS_1970_TO_2000, lat, lon, offset, *kinds)
        want_on, want_off = node_minutes(ref_on, ref_off)
        if kinds[2] == SWITCH_CLOCK and ref_on != ref_off:
            want_off = -1  # the node keeps its stored minute for a clock switch
        if ref_on in (NIGHT_START, ref_off) or ref_off in (0.0, NIGHT_END):
            polar += 1
            assert (on, off) == (want_on, want_off), (line, ref_on, ref_off)
            continue
        assert min((on - want_on) % 1440, (want_on - on) % 1440) <= 1, (line, ref_on)
        if want_off >= 0:
            assert min((off - want_off) % 1440, (want_off - off) % 1440) <= 1, (line, ref_off)
        else:
            assert off == -1, line
    assert polar > 30  # the polar weeks were part of the year
