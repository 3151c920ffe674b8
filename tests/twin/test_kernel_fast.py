"""The fast lighting kernel draws exactly the stream of the plain step-by-step formulation.

``night_arrivals`` (batched, hour carried, uniforms drawn ahead by our own MT19937) must give
bit for bit the arrivals of repeated ``next_arrival`` calls on Numba's ``np.random`` after
``np.random.seed(lamp_seed(...))``: the stream the kernel used before it was batched.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numba import njit

from twin.kernels.arrivals import (
    MT_N,
    UNIFORM_BLOCK,
    lamp_arrivals,
    lamp_seed,
    mt_seed,
    next_arrival,
    refill_uniforms,
)
from twin.replication import prepare_lighting
from twin.scenario import load_scenario


@njit
def _numba_uniforms(seed: int, n: int) -> np.ndarray:
    np.random.seed(seed)
    out = np.empty(n)
    for i in range(n):
        out[i] = np.random.random()
    return out


@njit
def _own_uniforms(seed: int, n: int) -> np.ndarray:
    mt = np.empty(MT_N, dtype=np.int64)
    u = np.empty(UNIFORM_BLOCK)
    mt_seed(seed, mt)
    ui = UNIFORM_BLOCK
    out = np.empty(n)
    for i in range(n):
        if ui == UNIFORM_BLOCK:
            ui = refill_uniforms(u, mt)
        out[i] = u[ui]
        ui += 1
    return out


@njit
def _stepped_arrivals(
    seed: int, lamp: int, rates_per_hour: np.ndarray, first_lit: np.ndarray, end_lit: np.ndarray
) -> np.ndarray:
    """The pre-batching formulation: np.random seeded per lamp, one next_arrival at a time."""
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


def test_own_mersenne_twister_is_numbas_np_random() -> None:
    seeds = [0, 1, 2**31, 4294967290] + [int(lamp_seed(s, i)) for s in (1, 12345) for i in range(0, 3000, 331)]
    n = 4 * UNIFORM_BLOCK + 7  # across several twists
    for seed in seeds:
        np.testing.assert_array_equal(_own_uniforms(seed, n), _numba_uniforms(seed, n))


def test_batched_arrivals_equal_stepped_arrivals(tiny_scenario: Path) -> None:
    inputs = prepare_lighting(load_scenario(tiny_scenario), 30)
    d = inputs.district
    total = 0
    for seed in (1, 12345):
        for i in range(d.n_lamps):
            p = d.lamp_program[i]
            rates = inputs.rates[d.lamp_area[i]]
            args = (seed, i, rates, inputs.first_lit[p], inputs.end_lit[p])
            expected = _stepped_arrivals(*args)
            np.testing.assert_array_equal(lamp_arrivals(*args), expected)
            total += expected.size
    assert total > 1000
