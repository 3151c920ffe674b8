"""Motion arrivals at lamps: a Poisson process per lamp with hourly rates, drawn fast.

Owns: each lamp's random stream (:func:`lamp_seed`), Numba's MT19937 reproduced a twist at a
time (:func:`mt_seed`, :func:`refill_uniforms`, bit for bit the stream of ``np.random`` seeded
the same way), the batched per-night draw (:func:`night_arrivals`) and a whole lamp's arrivals
(:func:`lamp_arrivals`). One lamp's stream does not depend on how many lamps are simulated.

Must not import: simpy, twin.sim, twin.reference, twin.kernels.lighting, twin.kernels.lighting_tables.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True)
def lamp_seed(seed: int, lamp: int) -> int:
    """A 32-bit seed for one lamp's random stream, from the replication seed and lamp index."""
    return ((seed % 2147483647) * 48271 + (lamp + 1) * 2654435761) % 4294967291


@njit(cache=True)
def next_arrival(x: float, end: float, rates_per_hour: np.ndarray) -> float:
    """Next arrival after night-minute ``x`` of a Poisson process with hourly rates, or inf.

    ``rates_per_hour[h]`` is arrivals per hour during local clock hour ``h``. Exact for a
    piecewise-constant rate: a draw that crosses an hour boundary restarts there (memoryless).

    The clock minute ``(720 + x) % 1440`` and hour ``clock // 60`` are computed without the
    (slow) float modulo on the usual range; both forms are exact, so the stream is bit-for-bit
    the one the ``%``/``//`` formulation gives.
    """
    while x < end:
        a = 720.0 + x
        if 1440.0 <= a < 2880.0:
            clock = a - 1440.0  # exact (Sterbenz), equals a % 1440.0
        elif 0.0 <= a < 1440.0:
            clock = a
        else:
            clock = a % 1440.0
        hour = int(clock / 60.0)
        if hour * 60.0 > clock:  # the quotient rounded up to an integer: floor is one less
            hour -= 1
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


MT_N = 624  # Mersenne Twister state words
UNIFORM_BLOCK = MT_N // 2  # doubles per twist: each takes two 32-bit words


@njit(cache=True)
def mt_seed(seed: int, mt: np.ndarray) -> None:
    """Seed a Mersenne Twister state ``mt`` (int64[624]) as ``np.random.seed(seed)`` does in Numba.

    Numba's generator (``numba/_random.c``: ``numba_rnd_init``) is MT19937 with Knuth's
    initialisation; :func:`refill_uniforms` then yields exactly its ``np.random.random()``
    stream (checked draw for draw in tests/twin/test_kernel_fast.py), but a whole twist at a
    time in a tight loop instead of one state lookup and index check per draw.
    """
    s = seed & 0xFFFFFFFF
    for pos in range(MT_N):
        mt[pos] = s
        s = (1812433253 * (s ^ (s >> 30)) + pos + 1) & 0xFFFFFFFF


@njit(cache=True, error_model="numpy")  # no division by zero here: no checks in the loop
def refill_uniforms(u: np.ndarray, mt: np.ndarray) -> int:
    """Twist ``mt`` once and write the next :data:`UNIFORM_BLOCK` uniforms to ``u``; returns 0.

    Bit for bit ``np.random.random()`` after ``np.random.seed``: a block boundary falls exactly
    where Numba reshuffles (624 words, two per double). Draws left over when a lamp is done
    are never used (the next lamp reseeds), so the consumed stream is unchanged.
    """
    upper = 0x80000000
    lower = 0x7FFFFFFF
    matrix = 0x9908B0DF
    for i in range(MT_N - 397):
        y = (mt[i] & upper) | (mt[i + 1] & lower)
        mt[i] = mt[i + 397] ^ (y >> 1) ^ ((y & 1) * matrix)
    for i in range(MT_N - 397, MT_N - 1):
        y = (mt[i] & upper) | (mt[i + 1] & lower)
        mt[i] = mt[i + 397 - MT_N] ^ (y >> 1) ^ ((y & 1) * matrix)
    y = (mt[MT_N - 1] & upper) | (mt[0] & lower)
    mt[MT_N - 1] = mt[396] ^ (y >> 1) ^ ((y & 1) * matrix)
    for j in range(UNIFORM_BLOCK):
        a = mt[2 * j]
        a ^= a >> 11
        a ^= (a << 7) & 0x9D2C5680
        a ^= (a << 15) & 0xEFC60000
        a ^= a >> 18
        b = mt[2 * j + 1]
        b ^= b >> 11
        b ^= (b << 7) & 0x9D2C5680
        b ^= (b << 15) & 0xEFC60000
        b ^= b >> 18
        u[j] = ((a >> 5) * 67108864.0 + (b >> 6)) / 9007199254740992.0
    return 0


@njit(cache=True, error_model="numpy")  # no division by zero here: no checks in the loop
def refill_exponentials(e: np.ndarray, mt: np.ndarray) -> int:
    """:func:`refill_uniforms`, then each uniform ``u`` turned into ``-log(1 - u)`` in place; returns 0.

    The very expression :func:`next_arrival` evaluates per draw, evaluated a twist at a time in
    a loop with no dependency between iterations (the logarithms overlap instead of sitting on
    the arrival loop's critical path). Scalar libm ``log`` either way (no vector math library:
    ``numba.config.USING_SVML`` is false here; tests/twin/test_kernel_fast.py compares the
    results draw for draw with the stepped form).
    """
    refill_uniforms(e, mt)
    for j in range(UNIFORM_BLOCK):
        e[j] = -math.log(1.0 - e[j])
    return 0


@njit(cache=True, error_model="numpy")  # no division by zero here: no checks in the loop
def night_arrivals(
    lo: float,
    hi: float,
    rate_per_minute: np.ndarray,
    buf: np.ndarray,
    u: np.ndarray,
    ui: int,
    mt: np.ndarray,
) -> tuple[np.ndarray, int, int]:
    """All arrivals in night-minutes ``[lo, hi)``: the draws of repeated :func:`next_arrival`.

    ``rate_per_minute`` is ``rates_per_hour / 60.0``. Same draws, same arithmetic, same values
    bit for bit as calling :func:`next_arrival` from ``lo`` until it returns inf; faster because
    the clock hour is carried from draw to draw (only checked, ``h*60 <= clock < h*60+60``,
    not recomputed) and the draws come from ``u[ui:]``: exponentials ``-log(1 - uniform)`` made
    ahead by :func:`refill_exponentials` from state ``mt`` (pass ``ui = len(u)`` right after
    :func:`mt_seed`). Writes into ``buf`` (grown if full); returns (buffer, count, next ui).
    """
    count = 0
    x = lo
    hour = -1
    h60 = -1.0e9  # current clock hour x 60; none yet
    rate = 0.0
    while x < hi:
        if count == buf.shape[0]:
            bigger = np.empty(2 * buf.shape[0] + 16)
            for q in range(count):
                bigger[q] = buf[q]
            buf = bigger
        a = 720.0 + x
        if 1440.0 <= a < 2880.0:
            clock = a - 1440.0  # exact (Sterbenz), equals a % 1440.0
        elif 0.0 <= a < 1440.0:
            clock = a
        else:
            clock = a % 1440.0
        if not (h60 <= clock < h60 + 60.0):  # hour = floor(clock / 60), exactly
            if h60 + 60.0 <= clock < h60 + 120.0:  # the usual case: the next hour
                hour += 1
            else:
                hour = int(clock / 60.0)
                if hour * 60.0 > clock:
                    hour -= 1
            h60 = hour * 60.0
            rate = rate_per_minute[hour]
        boundary = x + (60.0 - (clock - h60))
        if rate <= 0.0:
            x = boundary
            continue
        if ui == u.shape[0]:
            ui = refill_exponentials(u, mt)
        gap = u[ui] / rate
        ui += 1
        y = x + gap
        crossed = y >= boundary  # then restart at the boundary (memoryless)
        x = boundary if crossed else y
        buf[count] = x  # kept only if an arrival within the window
        if not crossed and x < hi:
            count += 1
    return buf, count, ui


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
    mt = np.empty(MT_N, dtype=np.int64)
    mt_seed(lamp_seed(seed, lamp), mt)
    rate_per_minute = rates_per_hour / 60.0
    buf = np.empty(64)
    u = np.empty(UNIFORM_BLOCK)
    ui = UNIFORM_BLOCK
    out = []
    for n in range(first_lit.shape[0]):
        lo = float(first_lit[n])
        hi = float(end_lit[n])
        if hi <= lo:
            continue
        buf, count, ui = night_arrivals(lo, hi, rate_per_minute, buf, u, ui, mt)
        for j in range(count):
            out.append(n * 1440.0 + buf[j])
    result = np.empty(len(out))
    for i in range(len(out)):
        result[i] = out[i]
    return result
