"""Failure kernels: lamp and driver times to failure from a hazard model; kernel-side renewal.

Owns: sampling when lamps fail. The hazard is the sum of a constant electronics (driver) term
and a Weibull wear-out term, i.e. survival ``S(t) = exp(-t/mtbf) * exp(-(t/scale)**shape)``
(docs/DOMAIN.md#failures: drivers fail most; exponential electronics term times Weibull wear-out). A lamp that
is already ``age`` hours old draws its first failure from the conditional distribution; a
repaired lamp (new driver and module) starts again at age 0.

Two ways to turn failures into outages, one seam: ``time_to_failure`` gives each lamp a row of
independent times to failure; whoever repairs the lamp (the SimPy maintenance dispatch in
``twin.sim``, or :func:`renewal_outages` here with sampled repair delays for the benchmark)
places failure ``j+1`` at ``repair_j + ttf[i, j+1]``. Repairs never change the draws, so the
two repair models see the same failures up to the first repair.

At city scale (``twin.city``) lamps are simulated in blocks, on threads or on Dask workers:
:func:`lamp_outages` draws each lamp's age, failures and repairs from that lamp's own stream
(seeded by the replication seed and the lamp's global index), so a lamp's outages do not depend
on the block it is in, nor on how many lamps there are.

Must not import: simpy, twin.sim, twin.reference.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from twin.kernels.arrivals import MT_N, UNIFORM_BLOCK, lamp_seed, mt_seed, refill_uniforms

FAILURE_STREAM = 1_000_003  # added to the seed: failure streams never coincide with motion streams


@njit(cache=True)
def _weibull_residual(age: float, shape: float, scale: float) -> float:
    """Remaining life of a Weibull(shape, scale) item that survived to ``age`` (inverse CDF)."""
    u = 1.0 - np.random.random()
    return float(scale * ((age / scale) ** shape - math.log(u)) ** (1.0 / shape) - age)


@njit(cache=True)
def time_to_failure(
    seed: int,
    age_h: np.ndarray,
    per_lamp: int,
    driver_mtbf_h: float,
    wearout_shape: float,
    wearout_scale_h: float,
) -> np.ndarray:
    """Hours to failure, shape (lamps, per_lamp): column 0 from each lamp's age, then new lamps.

    The electronics term is memoryless, so only the wear-out part depends on age.
    """
    np.random.seed(seed % 4294967291)
    n = age_h.shape[0]
    out = np.empty((n, per_lamp))
    for i in range(n):
        for j in range(per_lamp):
            age = age_h[i] if j == 0 else 0.0
            electronics = -math.log(1.0 - np.random.random()) * driver_mtbf_h
            wearout = _weibull_residual(age, wearout_shape, wearout_scale_h)
            out[i, j] = min(electronics, wearout)
    return out


@njit(cache=True)
def renewal_outages(
    seed: int, ttf_h: np.ndarray, horizon_min: float, repair_mean_h: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Outage intervals with exponential repair delays drawn here (no dispatch model).

    Returns CSR arrays (ptr[L+1], start[K], end[K]) in absolute twin minutes, what
    ``simulate_lighting`` takes. Used by ``twin bench`` and kernel-only studies.
    """
    np.random.seed((seed + 7) % 4294967291)
    n, per_lamp = ttf_h.shape
    ptr = np.zeros(n + 1, dtype=np.int64)
    starts = []
    ends = []
    for i in range(n):
        t = 0.0
        for j in range(per_lamp):
            t += ttf_h[i, j] * 60.0
            if t >= horizon_min:
                break
            repair = -math.log(1.0 - np.random.random()) * repair_mean_h * 60.0
            starts.append(t)
            ends.append(t + repair)
            t += repair
        ptr[i + 1] = len(starts)
    start = np.empty(len(starts))
    end = np.empty(len(ends))
    for k in range(len(starts)):
        start[k] = starts[k]
        end[k] = ends[k]
    return ptr, start, end


def lamp_outages(
    seed: int,
    first_lamp: int,
    n_lamps: int,
    age_lo_h: float,
    age_hi_h: float,
    max_failures: int,
    driver_mtbf_h: float,
    wearout_shape: float,
    wearout_scale_h: float,
    repair_mean_h: float,
    horizon_min: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Outages of lamps ``first_lamp .. first_lamp + n_lamps - 1``, each from its own stream.

    Per lamp: an age uniform in ``[age_lo_h, age_hi_h)``, then up to ``max_failures`` renewals,
    the same hazard and repair model as :func:`time_to_failure` + :func:`renewal_outages`
    (first failure conditional on the age, then new lamps; exponential repairs). Returns CSR
    arrays (ptr[n_lamps + 1], start[K], end[K]) in absolute twin minutes. The draws run in
    :func:`_lamp_failures` (releases the GIL); arrays are allocated and packed here, in NumPy
    (inside the kernel each allocation's overload costs a compile of its own).
    """
    if 1 + 3 * max_failures > UNIFORM_BLOCK:
        raise ValueError("max_failures: at most 103 renewals per lamp (one block of uniforms)")
    starts = np.empty((n_lamps, max_failures))
    ends = np.empty((n_lamps, max_failures))
    count = np.zeros(n_lamps, dtype=np.int64)
    _lamp_failures(
        seed, first_lamp, age_lo_h, age_hi_h, driver_mtbf_h, wearout_shape, wearout_scale_h, repair_mean_h,
        horizon_min, starts, ends, count, np.empty(MT_N, dtype=np.int64), np.empty(UNIFORM_BLOCK),
    )  # fmt: skip
    ptr = np.zeros(n_lamps + 1, dtype=np.int64)
    np.cumsum(count, out=ptr[1:])
    kept = np.arange(max_failures) < count[:, None]  # row by row: lamp order, then failure order
    return ptr, starts[kept], ends[kept]


@njit(cache=True, nogil=True)
def _lamp_failures(
    seed: int,
    first_lamp: int,
    age_lo_h: float,
    age_hi_h: float,
    driver_mtbf_h: float,
    wearout_shape: float,
    wearout_scale_h: float,
    repair_mean_h: float,
    horizon_min: float,
    starts: np.ndarray,
    ends: np.ndarray,
    count: np.ndarray,
    mt: np.ndarray,
    u: np.ndarray,
) -> None:
    """:func:`lamp_outages`' draws: lamp ``i``'s outages into ``starts[i, :count[i]]``/``ends``."""
    n_lamps, max_failures = starts.shape
    for i in range(n_lamps):
        mt_seed(lamp_seed(seed + FAILURE_STREAM, first_lamp + i), mt)
        refill_uniforms(u, mt)  # 312 uniforms: enough for 1 + 3 * max_failures draws
        age = age_lo_h + (age_hi_h - age_lo_h) * u[0]
        t = 0.0
        c = 0
        for j in range(max_failures):
            electronics = -math.log(1.0 - u[1 + 3 * j]) * driver_mtbf_h
            a = age if j == 0 else 0.0
            residual = (a / wearout_scale_h) ** wearout_shape - math.log(1.0 - u[2 + 3 * j])
            wearout = wearout_scale_h * residual ** (1.0 / wearout_shape) - a
            t += min(electronics, wearout) * 60.0
            if t >= horizon_min:
                break
            repair = -math.log(1.0 - u[3 + 3 * j]) * repair_mean_h * 60.0
            starts[i, c] = t
            ends[i, c] = t + repair
            c += 1
            t += repair
        count[i] = c
