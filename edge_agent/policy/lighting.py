"""The lamp level decision: one pure function the gateway runs and the twin compiles.

Owns: how a lighting program (TALQ-style: switch on/off by the sun or the clock, dimming steps
by clock time, a motion boost) turns into a lamp's level at a minute. Scalar arithmetic and
indexing only, so ``numba.njit`` compiles these very functions for the twin; the gateway passes
tuples, the twin numpy arrays. No I/O, no objects.

Minutes are local minutes of the day. A night runs from the evening switch-on to the morning
switch-off; steps are ordered in "night time" (minutes since local noon) so that a step at
00:30 comes after a step at 22:00.
"""

from __future__ import annotations

import math

from edge_agent.policy.sun import ZENITH_CIVIL, ZENITH_OFFICIAL, sun_event_minute

# How a switch time is given (ProgramArrays.on_kind / off_kind).
SWITCH_SUN = 0  # sunset (evening) / sunrise (morning), plus an offset in minutes
SWITCH_CIVIL = 1  # civil dusk (evening) / civil dawn (morning), plus an offset
SWITCH_CLOCK = 2  # a fixed clock minute


def night_minute(minute_of_day: float) -> float:
    """Minutes since local noon: orders a night's events from evening into the morning."""
    return (minute_of_day - 720.0) % 1440.0


def switch_minute(kind: int, value: float, sun_minute: float, civil_minute: float) -> float:
    """The local minute a program switches, from its kind, offset or clock value and the sun.

    If the sun does not cross the horizon that day (NaN), the sun-based switch falls back to
    the clock value treated as an offset from 18:00 (evening) so lamps still light.
    """
    if kind == SWITCH_CLOCK:
        return value
    base = sun_minute if kind == SWITCH_SUN else civil_minute
    if math.isnan(base):
        return 1080.0 + value
    return base + value


def night_of(epoch_day: int, minute_of_day: float) -> int:
    """The local day whose evening started the night this minute belongs to."""
    return epoch_day if minute_of_day >= 720.0 else epoch_day - 1


def night_switch_minutes(
    night_day: int,
    latitude: float,
    longitude: float,
    utc_offset_minutes: float,
    on_kind: int,
    on_value: float,
    off_kind: int,
    off_value: float,
) -> tuple[float, float]:
    """(on, off) local minutes of the night that starts on the evening of ``night_day``.

    On comes from that evening's sunset or dusk; off from the next morning's sunrise or dawn.
    """
    sunset = sun_event_minute(night_day, latitude, longitude, utc_offset_minutes, ZENITH_OFFICIAL, False)
    dusk = sun_event_minute(night_day, latitude, longitude, utc_offset_minutes, ZENITH_CIVIL, False)
    sunrise = sun_event_minute(night_day + 1, latitude, longitude, utc_offset_minutes, ZENITH_OFFICIAL, True)
    dawn = sun_event_minute(night_day + 1, latitude, longitude, utc_offset_minutes, ZENITH_CIVIL, True)
    on = switch_minute(on_kind, on_value, sunset, dusk)
    if off_kind == SWITCH_CLOCK:
        off = off_value
    elif math.isnan(sunrise if off_kind == SWITCH_SUN else dawn):
        off = 360.0 + off_value
    else:
        off = (sunrise if off_kind == SWITCH_SUN else dawn) + off_value
    return on, off


def is_lit(minute_of_day: float, on_minute: float, off_minute: float) -> bool:
    """Whether a night program has the lamp on at this minute (on in the evening, off in the morning)."""
    now = night_minute(minute_of_day)
    return night_minute(on_minute) <= now < night_minute(off_minute)


def program_level(
    minute_of_day: float,
    on_minute: float,
    off_minute: float,
    base_level: float,
    step_minutes: tuple[float, ...],
    step_levels: tuple[float, ...],
    n_steps: int,
) -> float:
    """A lamp's level (0-100) from its program, before boosts and overrides.

    ``step_minutes`` are clock minutes, sorted in night order; the step in force is the last
    one at or before now (in night order) and after switch-on; before the first, ``base_level``.
    """
    if not is_lit(minute_of_day, on_minute, off_minute):
        return 0.0
    now = night_minute(minute_of_day)
    start = night_minute(on_minute)
    level = base_level
    for i in range(n_steps):
        step = night_minute(step_minutes[i])
        if start <= step <= now:
            level = step_levels[i]
    return level


def lamp_level(
    program: float,
    boost_active: bool,
    boost_level: float,
    override_level: float,
) -> float:
    """The final level: an override (>= 0) wins; otherwise a boost lifts a lit lamp's level.

    ``override_level`` < 0 means no override. A boost never switches on a lamp that the program
    has off (daylight): motion boosts are for the night.
    """
    if override_level >= 0.0:
        return min(100.0, override_level)
    if boost_active and program > 0.0:
        return max(program, boost_level)
    return program


def lamp_power_w(level: float, rated_w: float, standby_w: float) -> float:
    """Electrical power of a lamp at a dim level: LED drivers are close to linear above ~10%.

    Standby (controller) power is drawn day and night (docs/DOMAIN.md#lighting: 1-3 W for a smart node).
    """
    if level <= 0.0:
        return standby_w
    return standby_w + rated_w * level / 100.0


def decide_level(
    epoch_day: int,
    minute_of_day: float,
    latitude: float,
    longitude: float,
    utc_offset_minutes: float,
    on_kind: int,
    on_value: float,
    off_kind: int,
    off_value: float,
    base_level: float,
    step_minutes: tuple[float, ...],
    step_levels: tuple[float, ...],
    n_steps: int,
    boost_active: bool,
    boost_level: float,
    override_level: float,
) -> float:
    """The whole decision for one lamp at one local minute: what the gateway runs each minute.

    The twin computes the same thing in steps (switch minutes once per night, then
    ``program_level`` and ``lamp_level`` per minute); equivalence tests hold the two together.
    """
    night = night_of(epoch_day, minute_of_day)
    on, off = night_switch_minutes(
        night, latitude, longitude, utc_offset_minutes, on_kind, on_value, off_kind, off_value
    )
    program = program_level(minute_of_day, on, off, base_level, step_minutes, step_levels, n_steps)
    return lamp_level(program, boost_active, boost_level, override_level)


# Functions the twin registers with numba (register_jitable) so its kernels call these very ones.
JITABLE = (
    night_minute,
    switch_minute,
    night_of,
    night_switch_minutes,
    is_lit,
    program_level,
    lamp_level,
    lamp_power_w,
    decide_level,
)
