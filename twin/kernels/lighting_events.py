"""Event lighting kernel: a lamp-night costs its motion arrivals and switch points, not its 1,440 minutes.

Owns: :func:`event_kernel` (:func:`event_block` and its tables from ``twin.kernels.motion_plan``),
a drop-in for ``twin.kernels.lighting.lighting_block`` (same arguments, same outputs) whose cost
is proportional to the events of a lamp-night: the program's switch points (closed form: the
shared per-program tables of ``twin.kernels.lighting_tables``), its boosts and outages (nights an
outage touches are stepped minute by minute with the gateway's ``lamp_level``/``lamp_power_w``,
exactly as the reference kernel does; they are rare).

Motion, drawn directly (``twin.kernels.motion_plan``): per chunk of the lit window a Poisson
count from a CDF table, each arrival's minute from an alias table (two 64-bit words), set as a
bit in one 64-bit word per clock hour. A boost of ``b`` minutes from every occupied minute is
that bitmap or-ed with itself shifted by 1..b-1 (log2(b) shift-ors across words); its energy is,
per clock hour, a popcount of the boosted bits under each "adds this much" mask of the program's
night (the boost's power above the plain level is constant between switch points). No per-minute
work and no branch per arrival. The law is the per-minute kernel's exactly (up to 2**-32 in
probabilities); the random stream is not (a splitmix64 stream per lamp, seeded by seed and
global lamp index, so a lamp's results do not depend on its block). With given arrivals (a fixed
input file) the arithmetic is the reference kernel's, so results are equal bit for bit.

Where the time goes (naxi-3000, 3,000 lamps x 365 nights, one thread's CPU time, 2026-12-06,
load 6-7 on 2 cores, parts switched off one at a time): with nothing drawn 0.04 s (outages,
the closed-form nights, the Python around the blocks); Poisson counts ~0.05 s; arrival minutes
(~10 a lamp-night, two splitmix words each) ~0.08 s; boost spreading ~0.06 s; the popcount per
mask (~12 a lamp-night) ~0.06 s: 0.24-0.30 s in all (main's event kernel, geometric skips with
a branch per occupied minute: 0.63 s; smaller table dtypes and one word per arrival: no gain).
2026-12-06, load ~4: 0.21 s on one thread, 195 ns a lamp-night (1.1 M lamp-nights; 10.5
arrivals, 1.2 chunks, 12 masks each); 0.11 s on 2 threads. Around the kernel (outage draws,
the Python per block, combining the blocks: 5 + 0.5 ms). Cost grows with lamp-nights, not with the
tables' size (a 30-night model costs more per lamp-night: the per-lamp set-up).

Must not import: simpy, twin.sim, twin.reference, twin.kernels.lighting.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from numba import njit

from edge_agent.policy.lighting import lamp_level, lamp_power_w
from twin.kernels import register_policy_functions
from twin.kernels.lighting_tables import MINUTES_PER_NIGHT, REFERENCE_W, add_boost_stretch
from twin.kernels.motion_plan import GUIDE, MINUTE_BITS, boost_masks, lowest_bit, motion_plan, popcount

register_policy_functions()

MAX_FAST_BOOST = 120  # boosts longer than this (minutes) take the minute-by-minute path


def event_kernel(*args: Any) -> tuple[np.ndarray, ...]:
    """:func:`event_block` with ``lighting_block``'s exact argument list (the motion tables added here).

    Allocates the outputs and scratch arrays here, in Python: inside the kernel each distinct
    ``np.zeros``/``np.full``/``np.empty`` costs a compile of its own (about a fifth of
    :func:`event_block`'s cold compile), here microseconds.
    """
    rates, first_lit, end_lit, tables = args[12], args[7], args[8], args[9]
    if not isinstance(rates, np.ndarray):
        raise TypeError("event_kernel: argument 13 (rates_per_hour) must be an array")
    n_lamps = len(args[2])
    n_programs, n_nights = first_lit.shape
    n_rec = n_lamps if args[18] else 0
    arrival_ptr = args[19]
    longest = int(np.diff(arrival_ptr).max()) if len(arrival_ptr) > 1 else 0  # a lamp's given arrivals
    out = (
        np.zeros((n_lamps, 5), dtype=np.int64),  # counters
        np.zeros(n_lamps),  # energy
        np.zeros(n_lamps),  # baseline
        np.full((n_rec, n_nights), -1, dtype=np.int64),  # switch_on
        np.full((n_rec, n_nights), -1, dtype=np.int64),  # switch_off
        np.zeros(n_lamps, dtype=np.int64),  # outage_dark
        np.zeros(n_nights),  # by_night
        np.zeros(MINUTES_PER_NIGHT),  # by_minute
        np.zeros(24),  # boost_by_hour
        np.zeros((n_programs, n_nights)),  # plain_rated
    )
    buf = np.empty(max(MINUTES_PER_NIGHT + 1, longest))  # one night's occupied minutes (or given arrivals)
    occupied = np.zeros(MINUTES_PER_NIGHT // MINUTE_BITS + 3, dtype=np.uint64)
    dark_k = np.ceil(np.stack([args[13], args[14]])).astype(np.int64)  # civil darkness as whole minutes
    block: Callable[..., None] = event_block
    block(*args, *motion_plan(rates, first_lit, end_lit), *boost_masks(tables[2]), out, buf, occupied, dark_k)
    return out


@njit(cache=True, nogil=True, error_model="numpy")  # divisors are constants or positive
def event_block(
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
    chunk_ptr: np.ndarray,
    chunk_cdf: np.ndarray,
    chunk_guide: np.ndarray,
    chunk_alias: np.ndarray,
    chunk_start: np.ndarray,
    chunk_len: np.ndarray,
    mask_ptr: np.ndarray,
    mask_hour: np.ndarray,
    mask_bits: np.ndarray,
    mask_units: np.ndarray,
    results: tuple[np.ndarray, ...],
    buf: np.ndarray,
    occupied: np.ndarray,
    dark_k: np.ndarray,
) -> None:
    """``lighting_block``'s contract (arguments, outputs, partial sums), by events, into ``results``.

    The arguments are ``lighting_block``'s plus ``motion_plan`` and ``boost_masks``, then the
    zeroed outputs (``lighting_block``'s ten results, in order), a buffer longer than any lamp's
    given arrivals (and 1,440), the occupied-minute words and civil darkness as whole minutes
    (:func:`event_kernel` adds them all, so callers pass ``lighting_block``'s list). A night no outage
    touches, on a program whose boost never lights a dark minute, is priced from the bitmap; other
    nights, and given arrivals, list the night's occupied minutes (or arrivals) and take the
    reference kernel's paths.

    Lamp ``i`` of the block draws from its own splitmix64 stream, seeded by ``seed`` and
    ``first_lamp + i``. Given arrivals (``arrival_ptr`` non-empty) are used as they are: the
    result is then ``lighting_block``'s bit for bit. Releases the GIL: blocks run in threads.
    """
    _, unit_sum, boost_prefix, t_lit, t_dark_lit, t_on, t_off, boost_keeps_lit = tables
    n_lamps = lamp_program.shape[0]
    n_programs = levels.shape[0]
    n_nights = first_lit.shape[1]
    counters, energy, baseline, switch_on, switch_off, outage_dark = results[:6]
    by_night, by_minute, boost_by_hour, plain_rated = results[6:]
    given = arrival_ptr.shape[0] > 0
    golden = np.uint64(0x9E3779B97F4A7C15)
    m1 = np.uint64(0xBF58476D1CE4E5B9)
    m2 = np.uint64(0x94D049BB133111EB)
    s11 = np.uint64(11)
    s27 = np.uint64(27)
    s30 = np.uint64(30)
    s31 = np.uint64(31)
    s32 = np.uint64(32)
    s59 = np.uint64(59)
    low32 = np.uint64(0xFFFFFFFF)
    one = np.uint64(1)
    word_mask = np.uint64((1 << MINUTE_BITS) - 1)
    for i in range(n_lamps):
        # splitmix64, its state seeded from (seed, global lamp) through the same mix
        z = np.uint64(seed & 0xFFFFFFFF) * golden + np.uint64(first_lamp + i + 1)
        z = (z ^ (z >> s30)) * m1
        z = (z ^ (z >> s27)) * m2
        state = z ^ (z >> s31)
        g = arrival_ptr[i] if given else 0
        g_end = arrival_ptr[i + 1] if given else 0
        p = lamp_program[i]
        plan_row = (lamp_area[i] * n_programs + p) * n_nights
        rated = rated_w[i]
        standby = standby_w[i]
        boost = boost_level[p]
        boost_len = boost_minutes[p]
        boost_k = max(0, int(math.ceil(boost_len)))  # noqa: RUF046
        fast_program = boost_keeps_lit[p] and boost_k <= MAX_FAST_BOOST
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
            while o < o_end and outage_end[o] <= base + k_start:
                o += 1
            touched = o < o_end and outage_start[o] < base + k_stop
            n_arr = 0
            w_lo = (lo + 1) // MINUTE_BITS
            w_hi = hi // MINUTE_BITS
            drawn = False
            if given:
                while g < g_end and arrival_time[g] < base + MINUTES_PER_NIGHT:
                    buf[n_arr] = arrival_time[g] - base
                    n_arr += 1
                    g += 1
                arrivals += n_arr
            elif hi > lo and chunk_ptr[plan_row + n + 1] > chunk_ptr[plan_row + n]:
                drawn = True
                for w in range(w_lo, w_hi + 2):  # hours w_lo - 1 .. w_hi
                    occupied[w] = 0
                for ch in range(chunk_ptr[plan_row + n], chunk_ptr[plan_row + n + 1]):
                    state += golden
                    z = state
                    z = (z ^ (z >> s30)) * m1
                    z = (z ^ (z >> s27)) * m2
                    z = z ^ (z >> s31)
                    u = np.float64(z >> s11) * (1.0 / 9007199254740992.0)
                    count = chunk_guide[ch, int(u * GUIDE)]
                    while u >= chunk_cdf[ch, count]:
                        count += 1
                    arrivals += count
                    for _ in range(count):
                        state += golden
                        z = state
                        z = (z ^ (z >> s30)) * m1
                        z = (z ^ (z >> s27)) * m2
                        z = z ^ (z >> s31)
                        col = np.int64(z >> s59)
                        e = chunk_alias[ch, col]
                        piece = col if ((z >> s27) & low32) < (e >> s32) else np.int64(e & low32)
                        state += golden
                        z = state
                        z = (z ^ (z >> s30)) * m1
                        z = (z ^ (z >> s27)) * m2
                        z = z ^ (z >> s31)
                        c = chunk_start[ch, piece] + np.int64(((z & low32) * chunk_len[ch, piece]) >> s32)
                        occupied[c // MINUTE_BITS + 1] |= one << np.uint64(c % MINUTE_BITS)
            if fast_program and not touched:
                units = unit_sum[p, n]
                if drawn and boost_k > 0:
                    # boosted minutes: the occupied ones spread over the next boost_k - 1 minutes, by
                    # doubling (shift-or 1, 2, 4, ..), in place from the last word down (each word
                    # reads itself and the word before, not yet shifted)
                    span = 1
                    while span < boost_k:
                        step = min(span, boost_k - span)
                        up = np.uint64(step)
                        down = np.uint64(MINUTE_BITS - step)
                        for w in range(w_hi + 1, w_lo, -1):
                            x = occupied[w]
                            occupied[w] = x | ((x << up) & word_mask) | (occupied[w - 1] >> down)
                        span += step
                    mp = p * n_nights + n
                    for m in range(mask_ptr[mp], mask_ptr[mp + 1]):
                        h = mask_hour[m]  # a lit hour: within the words cleared above
                        extra = mask_units[m] * np.float64(popcount(occupied[h + 1] & mask_bits[m]))
                        units += extra
                        boost_by_hour[(12 + h) % 24] += rated * extra
                elif n_arr > 0:  # given arrivals: the reference kernel's runs, bit for bit
                    run_a = 0
                    run_b = 0
                    for j in range(n_arr + 1):
                        first = k_stop
                        stop = k_stop
                        if j < n_arr:
                            c = math.ceil(buf[j])
                            if c >= k_stop:
                                continue
                            first = int(c)
                            stop = min(int(math.ceil(c + boost_len)), k_stop)  # noqa: RUF046
                            if first <= run_b:
                                run_b = max(run_b, stop)
                                continue
                        units = add_boost_stretch(boost_prefix[p, n], run_a, run_b, rated, units, boost_by_hour)
                        run_a = first
                        run_b = stop
                night_energy = standby * MINUTES_PER_NIGHT + rated * units / REFERENCE_W
                plain_rated[p, n] += rated
                lit += t_lit[p, n]
                dark_lit += t_dark_lit[p, n]
                on_k = t_on[p, n]
                off_k = t_off[p, n]
            else:
                if drawn:  # the occupied minutes, in order
                    for w in range(w_lo, w_hi + 1):
                        x = occupied[w + 1]
                        while x != 0:
                            buf[n_arr] = w * MINUTE_BITS + np.int64(lowest_bit(x))
                            n_arr += 1
                            x &= x - one
                # Minute by minute: an outage touches this night (or a boost may switch a lamp on).
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
