"""Lighting kernels: switch tables, each lamp's level each minute, power and energy.

Owns: the fast, per-minute lighting model. Every decision calls the gateway's own policy
functions (``night_switch_minutes``, ``program_level``, ``lamp_level``, ``lamp_power_w``,
``sun_event_minute``), registered with Numba in ``twin.kernels``.

Time base: night ``n`` runs from local noon of day ``first_day + n`` to the next noon; a "night
minute" ``k`` (0..1439) counts from that noon, exactly the ordering of
``edge_agent.policy.lighting.night_minute``. Absolute twin minutes are ``n * 1440 + k``.

Motion: arrivals (pedestrians plus vehicles) at each lamp are a Poisson process with an hourly
rate by area type; an arrival at time ``x`` boosts minutes ``ceil(x) .. ceil(x)+boost-1``.
Draws come from Numba's ``np.random`` seeded per lamp (:func:`lamp_seed`), so one lamp's stream
does not depend on how many lamps are simulated, and :func:`lamp_arrivals` reproduces it for the
reference model.

Must not import: simpy, twin.sim, twin.reference.
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


@njit(cache=True)
def lamp_seed(seed: int, lamp: int) -> int:
    """A 32-bit seed for one lamp's random stream, from the replication seed and lamp index."""
    return ((seed % 2147483647) * 48271 + (lamp + 1) * 2654435761) % 4294967291


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
    dawn (polar summer) has an empty window.
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
def next_arrival(x: float, end: float, rates_per_hour: np.ndarray) -> float:
    """Next arrival after night-minute ``x`` of a Poisson process with hourly rates, or inf.

    ``rates_per_hour[h]`` is arrivals per hour during local clock hour ``h``. Exact for a
    piecewise-constant rate: a draw that crosses an hour boundary restarts there (memoryless).
    """
    while x < end:
        clock = (720.0 + x) % 1440.0
        hour = int(clock // 60.0)
        boundary = x + (60.0 - (clock - hour * 60.0))
        rate = rates_per_hour[hour] / 60.0
        if rate <= 0.0:
            x = boundary
            continue
        gap = -math.log(1.0 - np.random.random()) / rate
        if x + gap >= boundary:
            x = boundary
            continue
        x = x + gap
        if x < end:
            return x
        return math.inf
    return math.inf


@njit(cache=True)
def lamp_arrivals(
    seed: int,
    lamp: int,
    rates_per_hour: np.ndarray,
    first_lit: np.ndarray,
    end_lit: np.ndarray,
) -> np.ndarray:
    """All motion arrivals (absolute twin minutes) at one lamp: the stream the main kernel uses.

    ``first_lit[n]``/``end_lit[n]`` are the lamp's program lit window per night. Used by the
    reference model so both sides see the same arrivals (common random numbers).
    """
    np.random.seed(lamp_seed(seed, lamp))
    out = []
    for n in range(first_lit.shape[0]):
        lo = float(first_lit[n])
        hi = float(end_lit[n])
        if hi <= lo:
            continue
        x = next_arrival(lo, hi, rates_per_hour)
        while x < hi:
            out.append(n * 1440.0 + x)
            x = next_arrival(x, hi, rates_per_hour)
    result = np.empty(len(out))
    for i in range(len(out)):
        result[i] = out[i]
    return result


@njit(cache=True)
def simulate_lighting(
    seed: int,
    lamp_program: np.ndarray,
    lamp_area: np.ndarray,
    rated_w: np.ndarray,
    standby_w: np.ndarray,
    levels: np.ndarray,
    first_lit: np.ndarray,
    end_lit: np.ndarray,
    boost_level: np.ndarray,
    boost_minutes: np.ndarray,
    rates_per_hour: np.ndarray,
    dark_start: np.ndarray,
    dark_end: np.ndarray,
    outage_ptr: np.ndarray,
    outage_start: np.ndarray,
    outage_end: np.ndarray,
    record_switches: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every lamp's level every minute of every night; energy and service counters.

    Per lamp ``i`` the level at minute ``k`` of night ``n`` is
    ``lamp_level(levels[p, n, k], boost_active, boost_level[p], -1)`` (0 while the lamp is in an
    outage, ``outage_start <= t < outage_end`` in absolute minutes, intervals of lamp ``i`` at
    ``outage_ptr[i]:outage_ptr[i+1]`` sorted and disjoint), and its power ``lamp_power_w``.

    Returns, per lamp unless said: ``counters[L, 5]`` (lit minutes, dark minutes, dark minutes
    lit, motion arrivals, program-lit minutes), ``energy_wmin[L]`` (watt-minutes, standby
    included), ``baseline_wmin[L]`` (always-full: 100% through the program's lit minutes),
    ``luminaire_wmin_by_hour[24]`` (above standby, by local clock hour), ``energy_wmin_by_night[N]``,
    ``switch_on[L, N]``/``switch_off[L, N]`` (first lit and one past the last lit night-minute,
    -1 if dark all night; empty unless ``record_switches``), ``outage_dark_minutes[L]``.
    """
    n_lamps = lamp_program.shape[0]
    n_nights = first_lit.shape[1]
    counters = np.zeros((n_lamps, 5), dtype=np.int64)
    energy = np.zeros(n_lamps)
    baseline = np.zeros(n_lamps)
    by_hour = np.zeros(24)
    by_night = np.zeros(n_nights)
    n_rec = n_lamps if record_switches else 0
    switch_on = np.full((n_rec, n_nights), -1, dtype=np.int64)
    switch_off = np.full((n_rec, n_nights), -1, dtype=np.int64)
    outage_dark = np.zeros(n_lamps, dtype=np.int64)
    by_minute = np.zeros(MINUTES_PER_NIGHT)
    for i in range(n_lamps):
        np.random.seed(lamp_seed(seed, i))
        p = lamp_program[i]
        rates = rates_per_hour[lamp_area[i]]
        rated = rated_w[i]
        standby = standby_w[i]
        boost = boost_level[p]
        boost_len = boost_minutes[p]
        o = outage_ptr[i]
        o_end = outage_ptr[i + 1]
        lamp_energy = 0.0
        lit = 0
        dark = 0
        dark_lit = 0
        arrivals = 0
        program_lit = 0
        dark_out = 0
        for n in range(n_nights):
            row = levels[p, n]
            base = n * 1440.0
            lo = first_lit[p, n]
            hi = end_lit[p, n]
            ds = int(math.ceil(dark_start[n]))  # noqa: RUF046 (numba: ceil may be float)
            de = int(math.ceil(dark_end[n]))  # noqa: RUF046
            k_start = min(lo, ds) if hi > lo else ds
            k_stop = max(hi, de) if hi > lo else de
            if k_stop < k_start:
                k_stop = k_start
            program_lit += hi - lo
            x = next_arrival(float(lo), float(hi), rates) if hi > lo else math.inf
            boost_until = -1.0
            night_energy = standby * (MINUTES_PER_NIGHT - (k_stop - k_start))
            on_k = -1
            off_k = -1
            for k in range(k_start, k_stop):
                while x <= k:
                    arrivals += 1
                    until = math.ceil(x) + boost_len
                    if until > boost_until:
                        boost_until = until
                    x = next_arrival(x, float(hi), rates)
                out = False
                if o < o_end:
                    t = base + k
                    while o < o_end and outage_end[o] <= t:
                        o += 1
                    out = o < o_end and outage_start[o] <= t
                level = 0.0 if out else lamp_level(row[k], k < boost_until, boost, -1.0)
                power = lamp_power_w(level, rated, standby)
                night_energy += power
                is_dark = ds <= k < de
                if level > 0.0:
                    lit += 1
                    by_minute[k] += power - standby
                    if on_k < 0:
                        on_k = k
                    off_k = k + 1
                    if is_dark:
                        dark_lit += 1
                elif is_dark and out:
                    dark_out += 1
            while x < hi:  # arrivals in the last fraction of the lit window boost nothing
                arrivals += 1
                x = next_arrival(x, float(hi), rates)
            dark += max(0, de - ds)
            if record_switches:
                switch_on[i, n] = on_k
                switch_off[i, n] = off_k
            while o < o_end and outage_end[o] <= base + MINUTES_PER_NIGHT:
                o += 1
            lamp_energy += night_energy
            by_night[n] += night_energy
        energy[i] = lamp_energy
        baseline[i] = standby * n_nights * MINUTES_PER_NIGHT + rated * program_lit
        counters[i, 0] = lit
        counters[i, 1] = dark
        counters[i, 2] = dark_lit
        counters[i, 3] = arrivals
        counters[i, 4] = program_lit
        outage_dark[i] = dark_out
    for k in range(MINUTES_PER_NIGHT):
        by_hour[((720 + k) % 1440) // 60] += by_minute[k]
    return (
        counters,
        energy,
        baseline,
        by_hour,
        by_night,
        switch_on,
        switch_off,
        outage_dark,
    )
