"""What the event kernel draws motion from, and what a boosted minute is worth: plain-Python tables.

Owns: :func:`motion_plan` (per area, program and night: the night's arrivals as Poisson counts
over "chunks" of slots, each arrival's slot from an alias table), :func:`boost_masks` (per
program and night: which minutes of each clock hour a boost adds power to, and how much) and
the two bit intrinsics the kernel uses (:func:`popcount`, :func:`lowest_bit`).

The law (docs: ``twin.kernels.lighting_events``): motion at an area is a Poisson process whose
rate is constant within each clock hour; only the minute an arrival falls in matters ("slot"
``c`` stands for arrivals in ``(c - 1, c]``, clock hour ``(c - 1) // 60``). The lit window
``(lo, hi]`` of a night is cut into pieces of constant rate (one per clock hour), the pieces
grouped in time order into chunks of mean at most :data:`MAX_CHUNK_MEAN` (a piece with a larger
mean is cut into shorter pieces). A chunk's arrivals: ``N ~ Poisson(mean)`` by inversion of its
CDF table, then each arrival independently in piece ``j`` with probability ``weight_j / mean``
(alias table, 32 columns) and uniformly on that piece's slots: per slot, independent Poisson
counts of mean ``rate / 60``, the per-minute kernel's law exactly (up to 2**-32 in probabilities).

Plain Python over (areas x programs x nights), cached by the arrays' identity: nothing to
compile, built once per model (and per Dask worker).

Must not import: simpy, twin.sim, twin.reference, twin.kernels.lighting.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, cast

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

MAX_CHUNK_MEAN = 16.0  # P(N >= CDF_LEN) < 1e-18 at this mean
CDF_LEN = 64
GUIDE = 16
ALIAS_COLUMNS = 32  # >= pieces of a chunk: at most 24 clock hours, or 16 / rate-per-minute slots
MAX_RATE_PER_MINUTE = 16.0  # 960 arrivals an hour at one lamp: a one-slot piece is a chunk of its own
MINUTE_BITS = 60  # one 64-bit word per clock hour of the night: bit m is minute 60 * hour + m


def _popcount(typingctx: Any, x: Any) -> Any:
    """Set bits of a uint64 (LLVM ctpop: one instruction)."""
    if x != types.uint64:
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.ctpop(args[0])

    return types.uint64(types.uint64), codegen


def _lowest_bit(typingctx: Any, x: Any) -> Any:
    """Index of the lowest set bit of a non-zero uint64 (LLVM cttz)."""
    if x != types.uint64:
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.cttz(args[0], ir.Constant(ir.IntType(1), 0))

    return types.uint64(types.uint64), codegen


popcount = cast(Callable[[Any], Any], intrinsic(_popcount))
lowest_bit = cast(Callable[[Any], Any], intrinsic(_lowest_bit))

_CACHE: dict[str, tuple[tuple[Any, ...], tuple[np.ndarray, ...]]] = {}


def _cached(name: str, key: tuple[Any, ...], build: Any) -> tuple[np.ndarray, ...]:
    """``build()`` once per identity of the key's arrays (kept alive by the cache, so ids stay theirs)."""
    hit = _CACHE.get(name)
    if hit is not None and len(hit[0]) == len(key) and all(a is b for a, b in zip(hit[0], key, strict=True)):
        return hit[1]
    value: tuple[np.ndarray, ...] = build()
    _CACHE[name] = (key, value)
    return value


def _vose(weights: list[float]) -> np.ndarray:
    """Alias table over :data:`ALIAS_COLUMNS` equally likely columns, packed threshold << 32 | alias."""
    total = sum(weights)
    scaled = [w * ALIAS_COLUMNS / total for w in weights] + [0.0] * (ALIAS_COLUMNS - len(weights))
    top = 2**32 - 1
    thresh = [top] * ALIAS_COLUMNS
    alias = list(range(ALIAS_COLUMNS))
    small = [j for j in range(ALIAS_COLUMNS) if scaled[j] < 1.0]
    large = [j for j in range(ALIAS_COLUMNS) if scaled[j] >= 1.0]
    while small and large:
        s = small.pop()
        g = large[-1]
        thresh[s] = min(int(scaled[s] * 2.0**32), top)
        alias[s] = g
        scaled[g] = scaled[g] + scaled[s] - 1.0
        if scaled[g] < 1.0:
            large.pop()
            small.append(g)
    for j in small:  # rounding leftovers: a zero-weight column must never be chosen
        if j >= len(weights) or weights[j] == 0.0:
            thresh[j] = 0
            alias[j] = max(range(len(weights)), key=lambda k: weights[k])
    return np.array([(t << 32) | a for t, a in zip(thresh, alias, strict=True)], dtype=np.uint64)


def _poisson_cdf(mean: float) -> np.ndarray:
    cdf = np.empty(CDF_LEN)
    term = math.exp(-mean)
    cum = 0.0
    for k in range(CDF_LEN):
        cum += term
        cdf[k] = min(cum, 1.0)
        term *= mean / (k + 1)
    cdf[-1] = 2.0  # above any uniform: the search always ends
    return cdf


def _pieces(lo: int, hi: int, rate_per_minute: np.ndarray) -> list[tuple[int, int, float]]:
    """(first slot, slots, rate per minute) of constant rate covering slots ``lo + 1 .. hi``, in order."""
    out = []
    c = lo + 1
    while c <= hi:
        hour = (c - 1) // 60
        last = min(hi, (hour + 1) * 60)
        lam = float(rate_per_minute[(12 + hour) % 24])
        if lam > 0.0:
            step = max(1, int(MAX_CHUNK_MEAN // lam))  # slots per piece, so one piece's mean <= the cap
            for a in range(c, last + 1, step):
                out.append((a, min(step, last + 1 - a), lam))
        c = last + 1
    return out


def motion_plan(rates_per_hour: np.ndarray, first_lit: np.ndarray, end_lit: np.ndarray) -> tuple[np.ndarray, ...]:
    """Chunks of every (area, program, night): ``ptr[(a * P + p) * N + n]`` .. next, then per chunk
    ``cdf[C, CDF_LEN]`` (P(N <= k)), ``guide[C, GUIDE]`` (where the CDF search of a uniform in
    ``[b / GUIDE, (b + 1) / GUIDE)`` starts), ``alias[C, 32]`` (packed), ``start[C, 32]``,
    ``length[C, 32]``.
    """
    return _cached("plan", (rates_per_hour, first_lit, end_lit), lambda: _plan(rates_per_hour, first_lit, end_lit))


def _plan(rates_per_hour: np.ndarray, first_lit: np.ndarray, end_lit: np.ndarray) -> tuple[np.ndarray, ...]:
    rates = np.asarray(rates_per_hour, dtype=np.float64)
    if rates.ndim != 2 or rates.shape[1] != 24:
        raise ValueError(f"motion rates: shape (areas, 24) expected, got {rates.shape}")
    bad = np.argwhere(~((rates >= 0.0) & (rates <= 60.0 * MAX_RATE_PER_MINUTE)))
    if bad.size:
        a, h = (int(x) for x in bad[0])
        raise ValueError(
            f"motion rate of area {a}, hour {h}: {float(rates[a, h])!r} arrivals per lamp-hour, expected 0 to 960"
        )
    n_areas, (n_programs, n_nights) = rates.shape[0], first_lit.shape
    ptr = np.zeros(n_areas * n_programs * n_nights + 1, dtype=np.int64)
    cdfs, aliases, starts, lengths = [], [], [], []
    row = 0
    for a in range(n_areas):
        per_minute = rates[a] / 60.0
        for p in range(n_programs):
            for n in range(n_nights):
                chunk: list[tuple[int, int, float]] = []
                mean = 0.0
                for piece in [*_pieces(int(first_lit[p, n]), int(end_lit[p, n]), per_minute), None]:
                    w = piece[1] * piece[2] if piece else 0.0
                    if chunk and (piece is None or mean + w > MAX_CHUNK_MEAN):
                        cdfs.append(_poisson_cdf(mean))
                        aliases.append(_vose([c[1] * c[2] for c in chunk]))
                        pad = [0] * (ALIAS_COLUMNS - len(chunk))
                        starts.append([c[0] for c in chunk] + pad)
                        lengths.append([c[1] for c in chunk] + pad)
                        chunk, mean = [], 0.0
                    if piece:
                        chunk.append(piece)
                        mean += w
                row += 1
                ptr[row] = len(cdfs)
    n_chunks = len(cdfs)
    cdf = np.array(cdfs, dtype=np.float64).reshape(n_chunks, CDF_LEN)
    edges = np.arange(GUIDE) / GUIDE
    guide = np.array([np.searchsorted(row, edges, side="right") for row in cdf], dtype=np.int64)
    return (
        ptr,
        cdf,
        guide.reshape(n_chunks, GUIDE),
        np.array(aliases, dtype=np.uint64).reshape(n_chunks, ALIAS_COLUMNS),
        np.array(starts, dtype=np.int64).reshape(n_chunks, ALIAS_COLUMNS),
        np.array(lengths, dtype=np.uint64).reshape(n_chunks, ALIAS_COLUMNS),
    )


def boost_masks(boost_prefix: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per program and night, where a boost adds power: ``ptr[p * N + n]`` .. next entries, each
    (clock hour of the night, 60-bit minute mask, reference-lamp units each of those minutes adds).

    From ``night_tables``' ``boost_prefix`` (its running sum): minute ``k`` adds
    ``boost_prefix[k + 1] - boost_prefix[k]``; one entry per distinct non-zero value in an hour.
    """
    return _cached("masks", (boost_prefix,), lambda: _masks(boost_prefix))


def _masks(boost_prefix: np.ndarray) -> tuple[np.ndarray, ...]:
    n_programs, n_nights, _ = boost_prefix.shape
    extra = np.diff(boost_prefix, axis=2).reshape(n_programs, n_nights, 24, MINUTE_BITS)
    bit = np.uint64(1) << np.arange(MINUTE_BITS, dtype=np.uint64)
    ptr = np.zeros(n_programs * n_nights + 1, dtype=np.int64)
    hours, masks, values = [], [], []
    busy = (extra != 0.0).any(axis=3)
    for p in range(n_programs):
        for n in range(n_nights):
            for h in np.flatnonzero(busy[p, n]):
                e = extra[p, n, h]
                for v in np.unique(e[e != 0.0]):
                    hours.append(int(h))
                    masks.append(int(np.bitwise_or.reduce(bit[e == v])))
                    values.append(float(v))
            ptr[p * n_nights + n + 1] = len(values)
    return ptr, np.array(hours, dtype=np.int64), np.array(masks, dtype=np.uint64), np.array(values)
