"""Event lighting kernel: a lamp-night costs its motion events, not its 1,440 minutes.

Owns: :func:`event_kernel` (:func:`event_block` and its :func:`motion_tables`), a drop-in for
``twin.kernels.lighting.lighting_block`` (same arguments, same outputs) whose cost is
proportional to the events of a lamp-night: the program's switch points (closed form: the
shared per-program tables of ``twin.kernels.lighting_tables``), its boosted stretches (a difference of the boost running
sum), and outages (nights an outage touches are stepped minute by minute with the gateway's
``lamp_level``/``lamp_power_w``, exactly as the reference kernel does; they are rare).

Motion, drawn directly: only the minute an arrival falls in matters (an arrival at ``x`` boosts
minutes ``ceil(x) ..``; the minute loop asks ``x <= k``, which for whole ``k`` is
``ceil(x) <= k``). So "slot" ``c`` stands for arrivals in ``(c - 1, c]``. Within a clock hour
of rate ``lam`` per minute the slots are independent with P(occupied) = ``1 - exp(-lam)``: the
gap to the next occupied slot is geometric, drawn with one 64-bit random number from a Walker
alias table (outcomes 0..59 and "none in the next 60"; memoryless, so a draw crossing the hour
restarts at the next hour with its own table), and the number of arrivals in an occupied slot
is zero-truncated Poisson(``lam``), from the same number's low bits. No logarithm, no
per-minute work. The law is the per-minute kernel's exactly (up to 2**-32 in probabilities);
the random stream is not (a splitmix64 stream per lamp, seeded by seed and global lamp index,
so a lamp's results do not depend on its block). With given arrivals (a fixed input file) the
arithmetic is the reference kernel's, so results are equal bit for bit.

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
from twin.kernels.lighting_tables import MINUTES_PER_NIGHT, REFERENCE_W

register_policy_functions()

ALIAS_SLOTS = 64  # alias table columns: skips 0..59, 60 = "no arrival in the next 60 minutes", 3 empty
NONE_WITHIN = 60
COUNT_BITS = 26  # low bits of the random word: the count of arrivals in an occupied minute
COUNT_MAX = 64  # most arrivals one minute may hold (the rate is capped so the rest has P < 1e-18)
MAX_RATE_PER_MINUTE = 16.0  # 960 arrivals an hour at one lamp


def motion_tables(rates_per_hour: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per area and clock hour: alias thresholds (uint64, scaled 2**32), aliases, count thresholds.

    Outcome ``j < 60``: ``j`` empty minutes then an occupied one, probability ``q**j * (1 - q)``
    with ``q = exp(-rate / 60)``; outcome 60: none of the next 60 minutes occupied, ``q**60``.
    Count thresholds ``cnt[a, h, n]`` = floor(2**26 * P(N <= n | N >= 1)), N ~ Poisson(rate/60).
    Plain Python (a few thousand operations, cached by value): nothing to compile.
    """
    rates = np.ascontiguousarray(rates_per_hour, dtype=np.float64)
    key = (rates.shape, rates.tobytes())
    cached = _MOTION_TABLES.get(key)
    if cached is None:
        cached = _motion_tables(rates)
        _MOTION_TABLES[key] = cached
    return cached


_MOTION_TABLES: dict[tuple[tuple[int, ...], bytes], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}


def _motion_tables(rates_per_hour: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n_areas = rates_per_hour.shape[0]
    if rates_per_hour.ndim != 2 or rates_per_hour.shape[1] != 24:
        raise ValueError(f"motion rates: shape (areas, 24) expected, got {rates_per_hour.shape}")
    thresh = np.zeros((n_areas, 24, ALIAS_SLOTS), dtype=np.uint64)
    alias = np.zeros((n_areas, 24, ALIAS_SLOTS), dtype=np.int64)
    cnt = np.zeros((n_areas, 24, COUNT_MAX + 1), dtype=np.uint64)
    top = 2**32 - 1
    for a in range(n_areas):
        for h in range(24):
            lam = float(rates_per_hour[a, h]) / 60.0
            if not 0.0 <= lam <= MAX_RATE_PER_MINUTE:
                raise ValueError(
                    f"motion rate of area {a}, hour {h}: {float(rates_per_hour[a, h])!r} arrivals per lamp-hour, "
                    "expected 0 to 960"
                )
            q = math.exp(-lam)
            prob = [q**j * (1.0 - q) for j in range(NONE_WITHIN)] + [q**NONE_WITHIN]
            prob += [0.0] * (ALIAS_SLOTS - len(prob))
            # Vose's alias method over 64 equally likely columns.
            scaled = [x * ALIAS_SLOTS for x in prob]
            small = [j for j in range(ALIAS_SLOTS) if scaled[j] < 1.0]
            large = [j for j in range(ALIAS_SLOTS) if scaled[j] >= 1.0]
            for j in range(ALIAS_SLOTS):
                alias[a, h, j] = j
                thresh[a, h, j] = top
            while small and large:
                s = small.pop()
                g = large[-1]
                thresh[a, h, s] = min(int(scaled[s] * 2.0**32), top)
                alias[a, h, s] = g
                scaled[g] = scaled[g] + scaled[s] - 1.0
                if scaled[g] < 1.0:
                    large.pop()
                    small.append(g)
            # (columns left in either list keep their own outcome: rounding)
            if lam > 0.0:
                norm = -math.expm1(-lam)
                term = math.exp(-lam)
                cum = 0.0
                for n in range(1, COUNT_MAX + 1):
                    term *= lam / n
                    cum += term / norm
                    cnt[a, h, n] = int(min(cum, 1.0) * 2.0**COUNT_BITS)
                cnt[a, h, COUNT_MAX] = 2**COUNT_BITS
    return thresh, alias, cnt


def packed_tables(rates_per_hour: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`motion_tables` as the kernel reads them (cached by value): one word per alias column.

    ``packed[(area * 24 + hour) * 64 + col]`` = threshold << 32 | alias (one load per draw);
    ``counts`` = the count thresholds as uint32, flat. 12 + 6 KB per area: they stay in L1.
    """
    rates = np.ascontiguousarray(rates_per_hour, dtype=np.float64)
    key = (rates.shape, rates.tobytes())
    cached = _PACKED.get(key)
    if cached is None:
        thresh, alias, cnt = motion_tables(rates)
        packed = (thresh << np.uint64(32)) | alias.astype(np.uint64)
        cached = (np.ascontiguousarray(packed.ravel()), np.ascontiguousarray(cnt.astype(np.uint32).ravel()))
        _PACKED[key] = cached
    return cached


_PACKED: dict[tuple[tuple[int, ...], bytes], tuple[np.ndarray, np.ndarray]] = {}


def event_kernel(*args: Any) -> tuple[np.ndarray, ...]:
    """:func:`event_block` with ``lighting_block``'s exact argument list (the motion tables added here)."""
    rates = args[12]
    if not isinstance(rates, np.ndarray):
        raise TypeError("event_kernel: argument 13 (rates_per_hour) must be an array")
    block: Callable[..., tuple[np.ndarray, ...]] = event_block
    return block(*args, *packed_tables(rates))


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
    packed: np.ndarray,
    flat_cnt: np.ndarray,
) -> tuple[np.ndarray, ...]:
    """``lighting_block``'s contract (arguments, outputs, partial sums), by events.

    The arguments are ``lighting_block``'s plus :func:`packed_tables` of ``rates_per_hour``
    (:func:`event_kernel` adds them, so callers pass ``lighting_block``'s list). A night no
    outage touches on a program whose boost never lights a dark minute folds each occupied
    minute into the boost runs as it is drawn (no buffer, no second pass); other nights, and
    given arrivals, fill the night's buffer first.

    Lamp ``i`` of the block draws from its own splitmix64 stream, seeded by ``seed`` and
    ``first_lamp + i``. Given arrivals (``arrival_ptr`` non-empty) are used as they are: the
    result is then ``lighting_block``'s bit for bit. Releases the GIL: blocks run in threads.
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
    boost_by_hour = np.zeros(24)
    plain_rated = np.zeros((n_programs, n_nights))
    given = arrival_ptr.shape[0] > 0
    buf = np.empty(MINUTES_PER_NIGHT + 1)  # one night's occupied minutes (or given arrivals)
    golden = np.uint64(0x9E3779B97F4A7C15)
    m1 = np.uint64(0xBF58476D1CE4E5B9)
    m2 = np.uint64(0x94D049BB133111EB)
    s30 = np.uint64(30)
    s27 = np.uint64(27)
    s31 = np.uint64(31)
    s58 = np.uint64(58)
    s26 = np.uint64(COUNT_BITS)
    s32 = np.uint64(32)
    low32 = np.uint64(0xFFFFFFFF)
    low26 = np.uint64((1 << COUNT_BITS) - 1)
    dark_k = np.empty((2, n_nights), dtype=np.int64)
    for n in range(n_nights):
        dark_k[0, n] = int(math.ceil(dark_start[n]))  # noqa: RUF046 (numba: ceil may be float)
        dark_k[1, n] = int(math.ceil(dark_end[n]))  # noqa: RUF046
    for i in range(n_lamps):
        # splitmix64, its state seeded from (seed, global lamp) through the same mix
        z = np.uint64(seed & 0xFFFFFFFF) * golden + np.uint64(first_lamp + i + 1)
        z = (z ^ (z >> s30)) * m1
        z = (z ^ (z >> s27)) * m2
        state = z ^ (z >> s31)
        g = arrival_ptr[i] if given else 0
        g_end = arrival_ptr[i + 1] if given else 0
        p = lamp_program[i]
        area = lamp_area[i]
        rated = rated_w[i]
        standby = standby_w[i]
        boost = boost_level[p]
        boost_len = boost_minutes[p]
        boost_k = int(math.ceil(boost_len))  # noqa: RUF046
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
            while o < o_end and outage_end[o] <= base + k_start:
                o += 1
            touched = o < o_end and outage_start[o] < base + k_stop
            fused = fast_program and not touched and not given
            n_arr = 0
            units = unit_sum[p, n]
            run_a = 0
            run_b = 0
            if given:
                while g < g_end and arrival_time[g] < base + MINUTES_PER_NIGHT:
                    if n_arr == buf.shape[0]:
                        bigger = np.empty(2 * n_arr)
                        bigger[:n_arr] = buf
                        buf = bigger
                    buf[n_arr] = arrival_time[g] - base
                    n_arr += 1
                    g += 1
                arrivals += n_arr
            elif hi > lo:
                slot = lo + 1  # next candidate slot: arrivals in (slot - 1, slot]
                while slot <= hi:  # one clock hour at a time: its last slot, its tables' offset
                    hour = (slot - 1) // 60
                    hour_end = min((hour + 1) * 60, hi)
                    row = (area * 24 + (12 + hour) % 24) * ALIAS_SLOTS
                    row_cnt = (area * 24 + (12 + hour) % 24) * (COUNT_MAX + 1)
                    while True:
                        state += golden
                        z = state
                        z = (z ^ (z >> s30)) * m1
                        z = (z ^ (z >> s27)) * m2
                        z = z ^ (z >> s31)
                        col = np.int64(z >> s58)
                        e = packed[row + col]
                        slot += col if ((z >> s26) & low32) < (e >> s32) else np.int64(e & low32)
                        if slot > hour_end:  # includes "none within 60": never within this hour
                            break
                        u = z & low26
                        k = 1
                        while u >= flat_cnt[row_cnt + k]:
                            k += 1
                        arrivals += k
                        if fused:
                            if slot < k_stop:
                                stop = min(slot + boost_k, k_stop)
                                if slot <= run_b:
                                    run_b = max(run_b, stop)
                                else:
                                    while run_a < run_b:
                                        cut = min(run_b, (run_a // 60 + 1) * 60)
                                        extra = boost_prefix[p, n, cut] - boost_prefix[p, n, run_a]
                                        units += extra
                                        boost_by_hour[(12 + run_a // 60) % 24] += rated * extra
                                        run_a = cut
                                    run_a = slot
                                    run_b = stop
                        else:
                            buf[n_arr] = slot
                            n_arr += 1
                        slot += 1
                        if slot > hour_end:
                            break
                    slot = hour_end + 1
            if fast_program and not touched:
                for j in range(n_arr):
                    c = math.ceil(buf[j])
                    if c < k_stop:
                        first = int(c)
                        stop = min(int(math.ceil(c + boost_len)), k_stop)  # noqa: RUF046
                        if first <= run_b:
                            run_b = max(run_b, stop)
                        else:
                            while run_a < run_b:
                                cut = min(run_b, (run_a // 60 + 1) * 60)
                                extra = boost_prefix[p, n, cut] - boost_prefix[p, n, run_a]
                                units += extra
                                boost_by_hour[(12 + run_a // 60) % 24] += rated * extra
                                run_a = cut
                            run_a = first
                            run_b = stop
                while run_a < run_b:
                    cut = min(run_b, (run_a // 60 + 1) * 60)
                    extra = boost_prefix[p, n, cut] - boost_prefix[p, n, run_a]
                    units += extra
                    boost_by_hour[(12 + run_a // 60) % 24] += rated * extra
                    run_a = cut
                night_energy = standby * MINUTES_PER_NIGHT + rated * units / REFERENCE_W
                plain_rated[p, n] += rated
                lit += t_lit[p, n]
                dark_lit += t_dark_lit[p, n]
                on_k = t_on[p, n]
                off_k = t_off[p, n]
            else:
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
