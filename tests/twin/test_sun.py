"""Trust: sunrise and sunset from the kernel match astral within a minute, a whole year, at the
site of every shipped scenario (the kernel calls the policy's NOAA code through Numba)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from astral import Observer
from astral.sun import sunrise, sunset

from twin.kernels.lighting import sun_table
from twin.scenario import load_scenario, utc_offsets

SCENARIOS = sorted((Path(__file__).resolve().parents[2] / "scenarios").glob("*.toml"))


def _local_minute(moment: dt.datetime, day: dt.date) -> float:
    midnight = dt.datetime(day.year, day.month, day.day, tzinfo=moment.tzinfo)
    return (moment - midnight).total_seconds() / 60.0


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda p: p.name)
def test_sun_events_match_astral_over_a_year(scenario: Path) -> None:
    loaded = load_scenario(scenario)
    site = loaded.spec.site
    zone = ZoneInfo(site.timezone)
    first = loaded.first_day
    days = 366
    table = sun_table(first, days, site.latitude, site.longitude, np.array(utc_offsets(site.timezone, first, days)))
    observer = Observer(latitude=site.latitude, longitude=site.longitude)
    worst = 0.0
    for d in range(days):
        day = dt.date(1970, 1, 1) + dt.timedelta(days=first + d)
        rise = _local_minute(sunrise(observer, day, tzinfo=zone), day)
        fall = _local_minute(sunset(observer, day, tzinfo=zone), day)
        worst = max(worst, abs(table[d, 0] - rise), abs(table[d, 1] - fall))
    assert worst <= 1.0, f"worst difference {worst:.2f} min at {scenario.name}"
