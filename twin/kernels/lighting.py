"""Lighting kernel: each lamp's level each minute, power and energy, over a block of lamps.

Owns: the fast, per-minute lighting model of each lamp (:func:`lighting_block` over a block of
lamps, :func:`finish_by_hour`, :func:`simulate_lighting` for all lamps at once). Every decision
calls the gateway's own policy functions (``lamp_level``, ``lamp_power_w``), registered with
Numba in ``twin.kernels``; the tables every lamp of a program shares (switch minutes, levels,
civil darkness, a unit lamp's power) come from ``twin.kernels.lighting_tables``.

Time base: night ``n`` runs from local noon of day ``first_day + n`` to the next noon; a "night
minute" ``k`` (0..1439) counts from that noon, exactly the ordering of
``edge_agent.policy.lighting.night_minute``. Absolute twin minutes are ``n * 1440 + k``.

Motion: arrivals (pedestrians plus vehicles) at each lamp are a Poisson process with an hourly
rate by area type; an arrival at time ``x`` boosts minutes ``ceil(x) .. ceil(x)+boost-1``.
Draws come from ``twin.kernels.arrivals`` (each lamp's own stream, independent of how many
lamps are simulated).

Speed: the per-program level table is shared by all lamps of a program, so a lamp-night without
an outage costs only its arrivals (:func:`night_tables`, :func:`simulate_lighting`); results
are those of the minute-by-minute loop up to floating-point summation order.

Must not import: simpy, twin.sim, twin.reference.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from edge_agent.policy.lighting import lamp_level, lamp_power_w
from twin.kernels import register_policy_functions
from twin.kernels.arrivals import MT_N, UNIFORM_BLOCK, lamp_seed, mt_seed, night_arrivals
from twin.kernels.lighting_tables import MINUTES_PER_NIGHT, REFERENCE_W, add_boost_stretch, night_tables

register_policy_functions()


@njit(cache=True, nogil=True, error_model="numpy")  # divisors are constants or positive
def lighting_block(
    seed: int,
    first_lamp: int,
    lamp_program: np.ndarray,
    lamp_area: np.ndarray,
    rated_w: np.ndarray,
    standby_w: np.ndarray,
    levels: np.ndarray,
    first_lit: np.ndarray,
    end_lit: np.ndarray,
    tables: tuple[np.ndarray, ...],
    boost_level: np.ndarray,
    boost_minutes: np.ndarray,
    rates_per_hour: np.ndarray,
    dark_start: np.ndarray,
    dark_end: np.ndarray,
    outage_ptr: np.ndarray,
    outage_start: np.ndarray,
    outage_end: np.ndarray,
    record_switches: bool,
    arrival_ptr: np.ndarray,
    arrival_time: np.ndarray,
) -> tuple[np.ndarray, ...]:
    """:func:`simulate_lighting` for a block of lamps, global indices ``first_lamp ..``.

    ``tables`` is :func:`night_tables`' result (computed once, shared by all blocks). The lamp
    arrays, ``outage_ptr`` (length L+1) and ``arrival_ptr`` (L+1, or empty) are this block's;
    the pointers index the full ``outage_start``/``arrival_time`` arrays. Lamp ``i`` of the
    block draws from stream ``lamp_seed(seed, first_lamp + i)``, so a lamp's results do not
    depend on the block it is in. Returns the per-lamp outputs of :func:`simulate_lighting`
    (counters, energy, baseline, switch_on, switch_off, outage_dark) and the block's partial
    sums (by_night[N], by_minute[1440], boost_by_hour[24], plain_rated[P, N]) that
    :func:`finish_by_hour` turns into the hourly profile once blocks are added up in order.
    Releases the GIL: blocks run in threads.
    """
    _, unit_sum, boost_prefix, t_lit, t_dark_lit, t_on, t_off, boost_keeps_lit = tables
    n_lamps = lamp_program.shape[0]
    n_programs = levels.shape[0]
    n_nights = first_lit.shape[1]
    counters = np.zeros((n_lamps, 5), dtype=np.int64)
    energy = np.zeros(n_lamps)
    baseline = np.zeros(n_lamps)
    by_night = np.zeros(n_nights)
    n_rec = n_lamps if record_switches else 0
    switch_on = np.full((n_rec, n_nights), -1, dtype=np.int64)
    switch_off = np.full((n_rec, n_nights), -1, dtype=np.int64)
    outage_dark = np.zeros(n_lamps, dtype=np.int64)
    by_minute = np.zeros(MINUTES_PER_NIGHT)
    boost_by_hour = np.zeros(24)  # boost extra above the plain level, reference-lamp units x rated
    plain_rated = np.zeros((n_programs, n_nights))  # rated watts of lamp-nights on the fast path
    rate_per_minute = rates_per_hour / 60.0
    buf = np.empty(256)  # one night's arrivals at one lamp
    u = np.empty(UNIFORM_BLOCK)
    mt = np.empty(MT_N, dtype=np.int64)
    given = arrival_ptr.shape[0] > 0
    dark_k = np.empty((2, n_nights), dtype=np.int64)  # civil darkness [start, end) as whole minutes
    for n in range(n_nights):
        dark_k[0, n] = int(math.ceil(dark_start[n]))  # noqa: RUF046 (numba: ceil may be float)
        dark_k[1, n] = int(math.ceil(dark_end[n]))  # noqa: RUF046
    for i in range(n_lamps):
        mt_seed(lamp_seed(seed, first_lamp + i), mt)
        g = arrival_ptr[i] if given else 0
        g_end = arrival_ptr[i + 1] if given else 0
        ui = UNIFORM_BLOCK
        p = lamp_program[i]
        rates = rate_per_minute[lamp_area[i]]
        rated = rated_w[i]
        standby = standby_w[i]
        boost = boost_level[p]
        boost_len = boost_minutes[p]
        fast_program = boost_keeps_lit[p]
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
            base = n * 1440.0
            lo = first_lit[p, n]
            hi = end_lit[p, n]
            ds = dark_k[0, n]
            de = dark_k[1, n]
            k_start = min(lo, ds) if hi > lo else ds
            k_stop = max(hi, de) if hi > lo else de
            if k_stop < k_start:
                k_stop = k_start
            program_lit += hi - lo
            dark += max(0, de - ds)
            n_arr = 0
            if given:  # this night's given arrivals, as night minutes (exact: base is an integer)
                while g < g_end and arrival_time[g] < base + MINUTES_PER_NIGHT:
                    if n_arr == buf.shape[0]:
                        bigger = np.empty(2 * n_arr)
                        for q in range(n_arr):  # a loop: a slice assignment costs seconds of compile
                            bigger[q] = buf[q]
                        buf = bigger
                    buf[n_arr] = arrival_time[g] - base
                    n_arr += 1
                    g += 1
            elif hi > lo:
                buf, n_arr, ui = night_arrivals(float(lo), float(hi), rates, buf, u, ui, mt)
            arrivals += n_arr
            while o < o_end and outage_end[o] <= base + k_start:
                o += 1
            touched = o < o_end and outage_start[o] < base + k_stop
            if fast_program and not touched:
                # Stretches: the program's night as a whole, then each merged boost interval.
                units = unit_sum[p, n]
                run_a = 0
                run_b = 0
                for j in range(n_arr):
                    c = math.ceil(buf[j])
                    if c < k_stop:  # an arrival in the last fraction of the window boosts nothing
                        first = int(c)
                        stop = min(int(math.ceil(c + boost_len)), k_stop)  # noqa: RUF046 (k < c + len)
                        if first <= run_b:
                            run_b = max(run_b, stop)
                        else:
                            units = add_boost_stretch(boost_prefix[p, n], run_a, run_b, rated, units, boost_by_hour)
                            run_a = first
                            run_b = stop
                units = add_boost_stretch(boost_prefix[p, n], run_a, run_b, rated, units, boost_by_hour)
                night_energy = standby * MINUTES_PER_NIGHT + rated * units / REFERENCE_W
                plain_rated[p, n] += rated
                lit += t_lit[p, n]
                dark_lit += t_dark_lit[p, n]
                on_k = t_on[p, n]
                off_k = t_off[p, n]
            else:
                # Minute by minute (the lamp is out for part of this night).
                row = levels[p, n]
                boost_until = -1.0
                night_energy = standby * (MINUTES_PER_NIGHT - (k_stop - k_start))
                on_k = -1
                off_k = -1
                j = 0
                for k in range(k_start, k_stop):
                    while j < n_arr and buf[j] <= k:
                        until = math.ceil(buf[j]) + boost_len
                        if until > boost_until:
                            boost_until = until
                        j += 1
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
    return (
        counters,
        energy,
        baseline,
        switch_on,
        switch_off,
        outage_dark,
        by_night,
        by_minute,
        boost_by_hour,
        plain_rated,
    )


@njit(cache=True)
def finish_by_hour(
    by_minute: np.ndarray, plain_rated: np.ndarray, unit: np.ndarray, boost_by_hour: np.ndarray
) -> np.ndarray:
    """Luminaire watt-minutes by local clock hour from the (summed) partials of the blocks."""
    by_minute = by_minute.copy()
    n_programs, n_nights = plain_rated.shape
    for p in range(n_programs):
        for n in range(n_nights):
            weight = plain_rated[p, n] / REFERENCE_W
            if weight > 0.0:
                for k in range(MINUTES_PER_NIGHT):
                    by_minute[k] += weight * unit[p, n, k]
    by_hour = np.zeros(24)
    for k in range(MINUTES_PER_NIGHT):
        by_hour[((720 + k) % 1440) // 60] += by_minute[k]
    for h in range(24):
        by_hour[h] += boost_by_hour[h] / REFERENCE_W
    return by_hour


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
    arrival_ptr: np.ndarray,
    arrival_time: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every lamp's level every minute of every night; energy and service counters.

    Motion arrivals are drawn here (each lamp's stream, within its program's lit window) unless
    given: with ``arrival_ptr`` non-empty (length L+1), lamp ``i``'s arrivals are
    ``arrival_time[arrival_ptr[i]:arrival_ptr[i+1]]``, absolute twin minutes, sorted, within
    ``[0, N * 1440)`` (a fixed input file: ``twin.fixed_inputs``); each boosts within its own
    night. Pass empty arrays (``np.zeros(0, np.int64)``, ``np.zeros(0)``) to draw.

    Per lamp ``i`` the level at minute ``k`` of night ``n`` is
    ``lamp_level(levels[p, n, k], boost_active, boost_level[p], -1)`` (0 while the lamp is in an
    outage, ``outage_start <= t < outage_end`` in absolute minutes, intervals of lamp ``i`` at
    ``outage_ptr[i]:outage_ptr[i+1]`` sorted and disjoint), and its power ``lamp_power_w``.

    Plain Python around the compiled :func:`lighting_block` and :func:`finish_by_hour` (one
    block of all lamps). How: lamps of a program share their level each minute, so
    :func:`night_tables` evaluates
    the policy functions once per program and minute. A lamp-night with no outage in it then
    costs its motion arrivals only: energy is the program's night total scaled to the lamp's
    rated power (``lamp_power_w`` is standby plus rated power times a function of the level) plus,
    for each merged boost interval, a difference of the boosted-minus-plain running sum. Nights
    an outage touches (and programs whose boost could switch a lamp on) are stepped minute by
    minute with the policy functions, as the plain-SimPy reference does.

    Returns, per lamp unless said: ``counters[L, 5]`` (lit minutes, dark minutes, dark minutes
    lit, motion arrivals, program-lit minutes), ``energy_wmin[L]`` (watt-minutes, standby
    included), ``baseline_wmin[L]`` (always-full: 100% through the program's lit minutes),
    ``luminaire_wmin_by_hour[24]`` (above standby, by local clock hour), ``energy_wmin_by_night[N]``,
    ``switch_on[L, N]``/``switch_off[L, N]`` (first lit and one past the last lit night-minute,
    -1 if dark all night; empty unless ``record_switches``), ``outage_dark_minutes[L]``.
    """
    tables = night_tables(levels, boost_level, dark_start, dark_end)
    counters, energy, baseline, switch_on, switch_off, outage_dark, by_night, by_minute, boost_by_hour, plain_rated = (
        lighting_block(
            seed,
            0,
            lamp_program,
            lamp_area,
            rated_w,
            standby_w,
            levels,
            first_lit,
            end_lit,
            tables,
            boost_level,
            boost_minutes,
            rates_per_hour,
            dark_start,
            dark_end,
            outage_ptr,
            outage_start,
            outage_end,
            record_switches,
            arrival_ptr,
            arrival_time,
        )
    )
    by_hour = finish_by_hour(by_minute, plain_rated, tables[0], boost_by_hour)
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
