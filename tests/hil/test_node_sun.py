"""The lamp node's own sun maths (hardware/firmware/lamp_node/sun.py) under the real
MicroPython unix port agree with the gateway's (edge_agent/policy/sun.py) within a minute on
every day of a year, at several latitudes, so a node left alone switches at dusk all year."""

from __future__ import annotations

import math
import os
import subprocess
from pathlib import Path

import pytest

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
