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

from edge_agent.policy.sun import (
    SUN_ALWAYS_ABOVE,
    SUN_ALWAYS_BELOW,
    ZENITH_CIVIL,
    ZENITH_OFFICIAL,
    sun_event,
)

# How a switch time is given (ProgramArrays.on_kind / off_kind).
SWITCH_SUN = 0  # sunset (evening) / sunrise (morning), plus an offset in minutes
SWITCH_CIVIL = 1  # civil dusk (evening) / civil dawn (morning), plus an offset
SWITCH_CLOCK = 2  # a fixed clock minute

# The polar rule's switch minutes (see ``night_switch_minutes``).
MINUTES_PER_NIGHT = 1440.0
NIGHT_START = 720.0  # local noon: the first minute of a night (on, when the sun never rose that day)
NIGHT_END = 2160.0  # the next local noon: off at the end of the night (the sun does not rise next day)


def night_minute(minute_of_day: float) -> float:
    """Minutes since local noon: orders a night's events from evening into the morning."""
    return (minute_of_day - 720.0) % 1440.0


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

    The polar rule, for a sun-based switch whose sun event does not happen (``sun_event``):

    - evening, sun below the zenith all day (polar night): on at :data:`NIGHT_START` (local
      noon, the night's first minute): it is night all day, the program runs from the start;
    - evening, sun above the zenith all day (polar day): the switch-on never fires, the lamp
      stays off the whole night, whatever the off switch (returns ``(NIGHT_START, NIGHT_START)``);
    - morning, sun below all the next day (polar night): off at :data:`NIGHT_END` (the next
      local noon, the night's end);
    - morning, sun above all the next day (polar day): off at local midnight (0): the sun is up
      from the first minute of that day.

    Offsets (``sunset+5m``) do not apply to these polar substitutes; clock switches and the
    dimming steps (by clock) are unaffected. Consecutive polar nights are therefore lit without
    a gap, with the program's steps; polar days are dark except what clock switches light.
    """
    on_zenith = ZENITH_OFFICIAL if on_kind == SWITCH_SUN else ZENITH_CIVIL
    off_zenith = ZENITH_OFFICIAL if off_kind == SWITCH_SUN else ZENITH_CIVIL
    if on_kind == SWITCH_CLOCK:
        on = on_value
    else:
        evening, state = sun_event(night_day, latitude, longitude, utc_offset_minutes, on_zenith, False)
        if state == SUN_ALWAYS_ABOVE:
            return NIGHT_START, NIGHT_START
        on = NIGHT_START if state == SUN_ALWAYS_BELOW else evening + on_value
    if off_kind == SWITCH_CLOCK:
        off = off_value
    else:
        morning, state = sun_event(night_day + 1, latitude, longitude, utc_offset_minutes, off_zenith, True)
        if state == SUN_ALWAYS_BELOW:
            off = NIGHT_END
        elif state == SUN_ALWAYS_ABOVE:
            off = 0.0
        else:
            off = morning + off_value
    return on, off


def is_lit(minute_of_day: float, on_minute: float, off_minute: float) -> bool:
    """Whether a night program has the lamp on at this minute (on in the evening, off in the morning).

    ``off_minute >= NIGHT_END`` means "at the end of the night" (the next local noon).
    """
    now = night_minute(minute_of_day)
    end = MINUTES_PER_NIGHT if off_minute >= NIGHT_END else night_minute(off_minute)
    return night_minute(on_minute) <= now < end


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
    night_of,
    night_switch_minutes,
    is_lit,
    program_level,
    lamp_level,
    lamp_power_w,
    decide_level,
)
