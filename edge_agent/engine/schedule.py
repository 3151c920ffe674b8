"""When a time or sun trigger fires next: pure functions of the trigger, the place and a moment.

Owns: the next due time of a ``TimeTrigger`` (a daily ``HH:MM`` or a five-field cron, in the
gateway's time zone) and of a ``SunTrigger`` (sunrise, sunset, dawn or dusk plus an offset).
The engine keeps the timers; this module only computes when.
Must not import: the store, transports, the agent; no I/O.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from edge_agent.engine.lighting import local_time
from edge_agent.policy.model import SunTrigger, TimeTrigger, Trigger
from edge_agent.policy.sun import ZENITH_CIVIL, ZENITH_OFFICIAL, sun_event_minute
from edge_agent.policy.units import parse_clock, parse_signed_duration


def next_fire(when: Trigger, after: float, tz: ZoneInfo, latitude: float, longitude: float) -> float | None:
    """The next due time at or after ``after`` of a time or sun trigger; None for the others."""
    if isinstance(when, TimeTrigger):
        return next_time(when, after, tz)
    if isinstance(when, SunTrigger):
        return next_sun_event(when, after, tz, latitude, longitude)
    return None


def next_time(when: TimeTrigger, after: float, tz: ZoneInfo) -> float:
    start = datetime.fromtimestamp(after, tz)
    if when.cron is not None:
        from croniter import croniter  # only gateways with cron rules pay for it (~6 MB)

        return float(croniter(when.cron, start).get_next(float))
    assert when.at is not None
    minute = parse_clock(when.at)
    moment = start.replace(hour=minute // 60, minute=minute % 60, second=0, microsecond=0)
    if moment.timestamp() < after:
        moment = (moment + timedelta(days=1)).replace(hour=minute // 60, minute=minute % 60)
    return moment.timestamp()


def next_sun_event(when: SunTrigger, after: float, tz: ZoneInfo, latitude: float, longitude: float) -> float:
    offset = parse_signed_duration(when.offset)
    rising = when.event in ("sunrise", "dawn")
    zenith = ZENITH_OFFICIAL if when.event in ("sunrise", "sunset") else ZENITH_CIVIL
    local = local_time(after, tz)
    for day in range(local.epoch_day - 1, local.epoch_day + 3):
        minute = sun_event_minute(day, latitude, longitude, local.utc_offset_minutes, zenith, rising)
        if math.isnan(minute):
            continue
        moment = (day * 1440.0 + minute - local.utc_offset_minutes) * 60.0 + offset
        if moment >= after:
            return moment
    return after + 86400.0
