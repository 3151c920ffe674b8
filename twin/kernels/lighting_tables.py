"""Lighting tables: what every lamp of a program shares, per night and minute.

Owns: the per-program, per-night tables the lighting kernel (``twin.kernels.lighting``) reads,
each computed once for all lamps through the gateway's own policy functions
(``night_switch_minutes``, ``program_level``, ``lamp_level``, ``lamp_power_w``,
``sun_event_minute``, registered with Numba in ``twin.kernels``): switch minutes
(:func:`switch_table`), sun events (:func:`sun_table`), each program's level every minute
(:func:`program_levels`), civil darkness (:func:`dark_windows`) and a unit lamp's power and
boost sums (:func:`night_tables`). Night and minute conventions are the lighting kernel's.

Must not import: simpy, twin.sim, twin.reference, twin.kernels.lighting.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from edge_agent.policy.lighting import (
    lamp_level,
    lamp_power_w,
    night_minute,
    night_switch_minutes,
    program_level,
)
from edge_agent.policy.sun import ZENITH_CIVIL, ZENITH_OFFICIAL, sun_event_minute
from twin.kernels import register_policy_functions

register_policy_functions()

MINUTES_PER_NIGHT = 1440
REFERENCE_W = 100.0  # rated watts of the unit lamp whose power tables the kernel builds


@njit(cache=True)
def switch_table(
    first_day: int,
    n_nights: int,
    latitude: float,
    longitude: float,
    utc_offsets: np.ndarray,
    on_kind: np.ndarray,
    on_value: np.ndarray,
    off_kind: np.ndarray,
    off_value: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(on, off) local minutes of day per program and night, via ``night_switch_minutes``.

    ``utc_offsets[n]`` is the site's UTC offset in minutes on day ``first_day + n``.
    """
    n_programs = on_kind.shape[0]
    on = np.empty((n_programs, n_nights))
    off = np.empty((n_programs, n_nights))
    for p in range(n_programs):
        for n in range(n_nights):
            a, b = night_switch_minutes(
                first_day + n,
                latitude,
                longitude,
                utc_offsets[n],
                on_kind[p],
                on_value[p],
                off_kind[p],
                off_value[p],
            )
            on[p, n] = a
            off[p, n] = b
    return on, off


@njit(cache=True)
def sun_table(first_day: int, n_days: int, latitude: float, longitude: float, utc_offsets: np.ndarray) -> np.ndarray:
    """Local minutes of sunrise, sunset, civil dawn, civil dusk per day: shape (n_days, 4)."""
    out = np.empty((n_days, 4))
    for d in range(n_days):
        day = first_day + d
        off = utc_offsets[d]
        out[d, 0] = sun_event_minute(day, latitude, longitude, off, ZENITH_OFFICIAL, True)
        out[d, 1] = sun_event_minute(day, latitude, longitude, off, ZENITH_OFFICIAL, False)
        out[d, 2] = sun_event_minute(day, latitude, longitude, off, ZENITH_CIVIL, True)
        out[d, 3] = sun_event_minute(day, latitude, longitude, off, ZENITH_CIVIL, False)
    return out


@njit(cache=True)
def program_levels(
    on: np.ndarray,
    off: np.ndarray,
    base_level: np.ndarray,
    step_minutes: np.ndarray,
    step_levels: np.ndarray,
    n_steps: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each program's level at every minute of every night, via ``program_level``.

    Returns (levels[P, N, 1440], first_lit[P, N], end_lit[P, N]); lit minutes of a night are
    within ``first_lit <= k < end_lit`` (both 0 when the program never lights that night).
    """
    n_programs, n_nights = on.shape
    levels = np.zeros((n_programs, n_nights, MINUTES_PER_NIGHT))
    first = np.zeros((n_programs, n_nights), dtype=np.int64)
    end = np.zeros((n_programs, n_nights), dtype=np.int64)
    for p in range(n_programs):
        for n in range(n_nights):
            lo = -1
            hi = -1
            for k in range(MINUTES_PER_NIGHT):
                minute_of_day = (720.0 + k) % 1440.0
                level = program_level(
                    minute_of_day,
                    on[p, n],
                    off[p, n],
                    base_level[p],
                    step_minutes[p],
                    step_levels[p],
                    n_steps[p],
                )
                levels[p, n, k] = level
                if level > 0.0:
                    if lo < 0:
                        lo = k
                    hi = k + 1
            if lo >= 0:
                first[p, n] = lo
                end[p, n] = hi
    return levels, first, end


@njit(cache=True)
def dark_windows(sun: np.ndarray, n_nights: int) -> tuple[np.ndarray, np.ndarray]:
    """Night-minute bounds [start, end) of civil darkness (civil dusk to next civil dawn).

    ``sun`` is :func:`sun_table` over ``n_nights + 1`` days. A night without a civil dusk or
    dawn has an empty window: within the scenario's latitude bounds (+-72) that is polar summer
    only (the sun is at most 5.5 degrees below the horizon at noon in polar winter there, so civil
    dusk and dawn still happen; tests/twin/test_sun.py checks it at 69 N).
    """
    start = np.zeros(n_nights)
    end = np.zeros(n_nights)
    for n in range(n_nights):
        dusk = sun[n, 3]
        dawn = sun[n + 1, 2]
        if math.isnan(dusk) or math.isnan(dawn):
            continue
        start[n] = night_minute(dusk)
        end[n] = night_minute(dawn)
    return start, end


@njit(cache=True)
def night_tables(
    levels: np.ndarray,
    boost_level: np.ndarray,
    dark_start: np.ndarray,
    dark_end: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per program and night, what every lamp of that program shares, via the policy functions.

    For each minute ``k`` the un-boosted level ``lamp_level(levels[p, n, k], False, boost, -1)``
    and the boosted one ``lamp_level(levels[p, n, k], True, boost, -1)`` are turned into power
    above standby of a :data:`REFERENCE_W` lamp with ``lamp_power_w(level, REFERENCE_W, 0.0)``.
    Returns ``unit[P, N, 1440]`` (that power, un-boosted), ``unit_sum[P, N]``,
    ``boost_prefix[P, N, 1441]`` (running sum of boosted minus un-boosted power), ``lit[P, N]``
    and ``dark_lit[P, N]`` (lit minutes, all and within civil darkness), ``on_k[P, N]``/``off_k``
    (first and one past the last lit minute, -1 if none) and ``boost_keeps_lit[P]`` (a boost
    never changes whether a minute is lit; when false the kernel steps that program minute by
    minute). Integer levels give integer table entries, so these sums are exact.
    """
    n_programs, n_nights, n_minutes = levels.shape
    unit = np.zeros((n_programs, n_nights, n_minutes))
    unit_sum = np.zeros((n_programs, n_nights))
    boost_prefix = np.zeros((n_programs, n_nights, n_minutes + 1))
    lit = np.zeros((n_programs, n_nights), dtype=np.int64)
    dark_lit = np.zeros((n_programs, n_nights), dtype=np.int64)
    on_k = np.full((n_programs, n_nights), -1, dtype=np.int64)
    off_k = np.full((n_programs, n_nights), -1, dtype=np.int64)
    boost_keeps_lit = np.ones(n_programs, dtype=np.bool_)
    for p in range(n_programs):
        boost = boost_level[p]
        for n in range(n_nights):
            ds = int(math.ceil(dark_start[n]))  # noqa: RUF046 (numba: ceil may be float)
            de = int(math.ceil(dark_end[n]))  # noqa: RUF046
            row = levels[p, n]
            total = 0.0
            extra = 0.0
            for k in range(n_minutes):
                plain = lamp_level(row[k], False, boost, -1.0)
                boosted = lamp_level(row[k], True, boost, -1.0)
                if (plain > 0.0) != (boosted > 0.0):
                    boost_keeps_lit[p] = False
                power = lamp_power_w(plain, REFERENCE_W, 0.0)
                unit[p, n, k] = power
                total += power
                extra += lamp_power_w(boosted, REFERENCE_W, 0.0) - power
                boost_prefix[p, n, k + 1] = extra
                if plain > 0.0:
                    lit[p, n] += 1
                    if ds <= k < de:
                        dark_lit[p, n] += 1
                    if on_k[p, n] < 0:
                        on_k[p, n] = k
                    off_k[p, n] = k + 1
            unit_sum[p, n] = total
    return unit, unit_sum, boost_prefix, lit, dark_lit, on_k, off_k, boost_keeps_lit
