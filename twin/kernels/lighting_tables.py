"""Lighting tables: what every lamp of a program shares, per night and minute.

Owns: the per-program, per-night tables the lighting kernels (``twin.kernels.lighting``,
``twin.kernels.lighting_events``) read, each computed once for all lamps by calling the
gateway's own policy functions (``night_switch_minutes``, ``program_level``, ``lamp_level``,
``lamp_power_w``, ``sun_event_minute``, ``night_minute``) in plain Python: switch minutes
(:func:`switch_table`), sun events (:func:`sun_table`), each program's level every minute
(:func:`program_levels`), civil darkness (:func:`dark_windows`) and a unit lamp's power and
boost sums (:func:`night_tables`); and :func:`add_boost_stretch`, the one Numba helper both
kernels price a boosted stretch with. Night and minute conventions are the lighting kernel's.

Why plain Python: these run once per model on small arrays (per program and night); compiled,
they cost seconds of cold JIT (``twin.bench_warm``). The per-minute tables call the policy
functions once per piece, not per minute: a program's level is constant between its switch and
step minutes (:func:`program_levels`), and a unit lamp's power depends on the level only
(:func:`night_tables`: once per distinct level). tests/twin/test_tables.py compares every table
with the policy functions called minute by minute.

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
    n_programs = len(on_kind)
    on = np.empty((n_programs, n_nights))
    off = np.empty((n_programs, n_nights))
    offsets = [float(x) for x in utc_offsets[:n_nights]]
    for p in range(n_programs):
        kinds = (int(on_kind[p]), float(on_value[p]), int(off_kind[p]), float(off_value[p]))
        for n in range(n_nights):
            on[p, n], off[p, n] = night_switch_minutes(
                int(first_day) + n, float(latitude), float(longitude), offsets[n], *kinds
            )
    return on, off


def sun_table(first_day: int, n_days: int, latitude: float, longitude: float, utc_offsets: np.ndarray) -> np.ndarray:
    """Local minutes of sunrise, sunset, civil dawn, civil dusk per day: shape (n_days, 4)."""
    out = np.empty((n_days, 4))
    lat, lon = float(latitude), float(longitude)
    for d in range(n_days):
        day = int(first_day) + d
        off = float(utc_offsets[d])
        out[d, 0] = sun_event_minute(day, lat, lon, off, ZENITH_OFFICIAL, True)
        out[d, 1] = sun_event_minute(day, lat, lon, off, ZENITH_OFFICIAL, False)
        out[d, 2] = sun_event_minute(day, lat, lon, off, ZENITH_CIVIL, True)
        out[d, 3] = sun_event_minute(day, lat, lon, off, ZENITH_CIVIL, False)
    return out


def _breaks(thresholds: list[float]) -> list[int]:
    """Night minutes 0 <= k < 1440 at which ``t <= k`` or ``k < t`` can change for some threshold."""
    cuts = {0}
    for t in thresholds:
        if not math.isnan(t):
            k = math.ceil(t)
            if 0 < k < MINUTES_PER_NIGHT:
                cuts.add(k)
    return sorted(cuts)


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

    ``program_level`` compares the night minute ``k`` with thresholds only (switch-on, switch-off,
    each step, all in night minutes), so its value is constant between consecutive ``ceil`` of
    the thresholds: it is called once at the start of each such piece.
    """
    n_programs, n_nights = on.shape
    levels = np.zeros((n_programs, n_nights, MINUTES_PER_NIGHT))
    first = np.zeros((n_programs, n_nights), dtype=np.int64)
    end = np.zeros((n_programs, n_nights), dtype=np.int64)
    for p in range(n_programs):
        count = int(n_steps[p])
        steps = tuple(float(x) for x in step_minutes[p, :count])
        step_lv = tuple(float(x) for x in step_levels[p, :count])
        base = float(base_level[p])
        step_k = [night_minute(m) for m in steps]
        for n in range(n_nights):
            a, b = float(on[p, n]), float(off[p, n])
            cuts = _breaks([night_minute(a), night_minute(b), *step_k])
            row = levels[p, n]
            lo = -1
            hi = -1
            for j, k in enumerate(cuts):
                stop = cuts[j + 1] if j + 1 < len(cuts) else MINUTES_PER_NIGHT
                level = program_level((720.0 + k) % 1440.0, a, b, base, steps, step_lv, count)
                row[k:stop] = level
                if level > 0.0:
                    if lo < 0:
                        lo = k
                    hi = stop
            if lo >= 0:
                first[p, n] = lo
                end[p, n] = hi
    return levels, first, end


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
        dusk = float(sun[n, 3])
        dawn = float(sun[n + 1, 2])
        if math.isnan(dusk) or math.isnan(dawn):
            continue
        start[n] = night_minute(dusk)
        end[n] = night_minute(dawn)
    return start, end


def _distinct(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct values of ``rows`` (nights x minutes) and each entry's index among them.

    Levels are piecewise constant along a night: the distinct values are among each night's first
    minute and the minutes where the level changes (far fewer than all minutes to sort).
    """
    changed = rows[:, 1:] != rows[:, :-1]
    values = np.unique(np.concatenate([rows[:, 0], rows[:, 1:][changed]]))
    return values, np.searchsorted(values, rows)


def night_tables(
    levels: np.ndarray,
    boost_level: np.ndarray,
    dark_start: np.ndarray,
    dark_end: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per program and night, what every lamp of that program shares, via the policy functions.

    For each minute ``k`` the un-boosted level ``lamp_level(levels[p, n, k], False, boost, -1)``
    and the boosted one ``lamp_level(levels[p, n, k], True, boost, -1)`` are turned into power
    above standby of a :data:`REFERENCE_W` lamp with ``lamp_power_w(level, REFERENCE_W, 0.0)``
    (called once per distinct level of the program: they depend on nothing else).
    Returns ``unit[P, N, 1440]`` (that power, un-boosted), ``unit_sum[P, N]``,
    ``boost_prefix[P, N, 1441]`` (running sum of boosted minus un-boosted power), ``lit[P, N]``
    and ``dark_lit[P, N]`` (lit minutes, all and within civil darkness), ``on_k[P, N]``/``off_k``
    (first and one past the last lit minute, -1 if none) and ``boost_keeps_lit[P]`` (a boost
    never changes whether a minute is lit; when false the kernel steps that program minute by
    minute). Sums run minute by minute in order (``np.add.accumulate``); integer levels give
    integer table entries, so these sums are exact.
    """
    n_programs, n_nights, n_minutes = levels.shape
    unit = np.zeros((n_programs, n_nights, n_minutes))
    boost_prefix = np.zeros((n_programs, n_nights, n_minutes + 1))
    lit_mask = np.zeros((n_programs, n_nights, n_minutes), dtype=np.bool_)
    boost_keeps_lit = np.ones(n_programs, dtype=np.bool_)
    for p in range(n_programs):
        boost = float(boost_level[p])
        values, inverse = _distinct(levels[p])
        plain = [lamp_level(float(v), False, boost, -1.0) for v in values]
        boosted = [lamp_level(float(v), True, boost, -1.0) for v in values]
        power = [lamp_power_w(x, REFERENCE_W, 0.0) for x in plain]
        extra = [lamp_power_w(y, REFERENCE_W, 0.0) - x for x, y in zip(power, boosted, strict=True)]
        unit[p] = np.array(power)[inverse]
        boost_prefix[p, :, 1:] = np.add.accumulate(np.array(extra)[inverse], axis=1)
        lit_mask[p] = np.array([x > 0.0 for x in plain])[inverse]
        if any((x > 0.0) != (y > 0.0) for x, y in zip(plain, boosted, strict=True)):
            boost_keeps_lit[p] = False
    unit_sum = np.ascontiguousarray(np.add.accumulate(unit, axis=2)[:, :, -1])
    ds = np.ceil(dark_start).astype(np.int64)
    de = np.ceil(dark_end).astype(np.int64)
    k = np.arange(n_minutes)
    dark = (ds[:, None] <= k) & (k < de[:, None])  # [N, K]
    lit = lit_mask.sum(axis=2).astype(np.int64)
    dark_lit = (lit_mask & dark).sum(axis=2).astype(np.int64)
    any_lit = lit_mask.any(axis=2)
    on_k = np.where(any_lit, np.argmax(lit_mask, axis=2), -1).astype(np.int64)
    off_k = np.where(any_lit, n_minutes - np.argmax(lit_mask[:, :, ::-1], axis=2), -1).astype(np.int64)
    return unit, unit_sum, boost_prefix, lit, dark_lit, on_k, off_k, boost_keeps_lit


# An explicit signature: otherwise the kernels' ``run_a = 0`` compiles a second, literal-int copy.
@njit("float64(float64[:], int64, int64, float64, float64, float64[:])", cache=True, nogil=True)
def add_boost_stretch(
    boost_prefix: np.ndarray, a: int, b: int, rated: float, units: float, boost_by_hour: np.ndarray
) -> float:
    """``units`` plus a boost's extra over night minutes ``a .. b - 1``, added hour by clock hour.

    ``boost_prefix`` is one program-night row of :func:`night_tables`' running sum. Each clock
    hour's piece is added to ``units`` in turn (the kernels' summation order) and, times
    ``rated``, to ``boost_by_hour`` at its local clock hour. Both lighting kernels call it.
    """
    while a < b:
        cut = min(b, (a // 60 + 1) * 60)
        extra = boost_prefix[cut] - boost_prefix[a]
        units += extra
        boost_by_hour[(12 + a // 60) % 24] += rated * extra
        a = cut
    return units
