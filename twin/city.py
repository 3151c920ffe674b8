"""The twin at city scale: lighting + failures for any number of lamps, in blocks of lamps.

Owns: the block plan and its reduction. A city of ``n`` lamps is the scenario's district tiled
(lamp ``g`` has the attributes of district lamp ``g % L``) and cut into blocks at multiples
of :data:`BLOCK` global lamp indices. Each block draws its lamps' outages
(``lamp_outages``: each lamp its own stream) and runs the lighting kernel
(``lighting_block``: each lamp its own motion stream), so every per-lamp result is a pure
function of (scenario, seed, global lamp index). Blocks run in threads (the kernels release the
GIL) or on Dask workers (``twin.province``); the blocks' partial sums are added in block order,
so threads, processes or a cluster give bit-identical results for the same lamps.

Must not import: simpy, twin.sim, dask, typer, rich.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from twin.kernels.failures import lamp_outages
from twin.kernels.lighting import finish_by_hour, lighting_block
from twin.kernels.lighting_tables import night_tables
from twin.replication import FAILURE_DRAWS_PER_LAMP, HOURS_PER_YEAR, LightingInputs, prepare_lighting
from twin.scenario import LoadedScenario

BLOCK = 250  # lamps per block: 12 blocks for a 3,000-lamp district, fine-grained enough for 2 threads
REPAIR_MEAN_H = 6.0  # detection, crew travel and repair, exponential (kernel and reference alike)

Progress = Callable[[int], None]
Kernel = Callable[..., tuple[np.ndarray, ...]]  # lighting_block's contract


@dataclass(frozen=True)
class FailureParams:
    """The scenario's failure hazard in hours, and the repair delay (docs/DOMAIN.md#failures)."""

    age_lo_h: float
    age_hi_h: float
    driver_mtbf_h: float
    wearout_shape: float
    wearout_scale_h: float
    repair_mean_h: float = REPAIR_MEAN_H


@dataclass(frozen=True)
class CityModel:
    """What every block needs: the prepared inputs, the shared night tables, the hazard."""

    inputs: LightingInputs
    tables: tuple[np.ndarray, ...]
    failures: FailureParams

    @property
    def district_lamps(self) -> int:
        return self.inputs.district.n_lamps


@dataclass
class BlockResult:
    """One block's per-lamp outputs and partial sums (see ``lighting_block``)."""

    first: int
    counters: np.ndarray  # (L, 5) lit, dark, dark lit, arrivals, program-lit minutes
    energy: np.ndarray  # (L,) watt-minutes
    baseline: np.ndarray
    outage_dark: np.ndarray
    failures: np.ndarray  # (L,) outages starting within the horizon
    by_night: np.ndarray
    by_minute: np.ndarray
    boost_by_hour: np.ndarray
    plain_rated: np.ndarray


@dataclass
class CityResult:
    """Lamps ``first .. first + n - 1``: per-lamp arrays and the district-wide profiles."""

    first: int
    counters: np.ndarray
    energy: np.ndarray
    baseline: np.ndarray
    outage_dark: np.ndarray
    failures: np.ndarray
    by_night: np.ndarray
    by_hour: np.ndarray
    blocks: int

    @property
    def n_lamps(self) -> int:
        return int(self.energy.shape[0])

    def equals(self, other: CityResult) -> bool:
        """Bit-identical, every array (NaNs are never produced)."""
        names = ("counters", "energy", "baseline", "outage_dark", "failures", "by_night", "by_hour")
        return self.first == other.first and all(np.array_equal(getattr(self, n), getattr(other, n)) for n in names)


def failure_params(loaded: LoadedScenario) -> FailureParams:
    f = loaded.spec.failures
    lo, hi = f.age_years
    return FailureParams(
        age_lo_h=lo * HOURS_PER_YEAR,
        age_hi_h=hi * HOURS_PER_YEAR,
        driver_mtbf_h=f.driver_mtbf_years * HOURS_PER_YEAR,
        wearout_shape=f.wearout_shape,
        wearout_scale_h=f.wearout_scale_years * HOURS_PER_YEAR,
    )


def city_model(loaded: LoadedScenario, days: int) -> CityModel:
    inputs = prepare_lighting(loaded, days)
    tables = night_tables(inputs.levels, inputs.programs.boost_level, inputs.dark_start, inputs.dark_end)
    return CityModel(inputs, tuple(tables), failure_params(loaded))


def block_plan(first: int, n_lamps: int, block: int = BLOCK) -> list[tuple[int, int]]:
    """(first, count) of each block covering lamps ``first .. first + n_lamps - 1``.

    Cuts fall at multiples of ``block`` whatever the range, so a slice starting at a multiple
    of ``block`` is cut exactly as the same lamps within a larger run.
    """
    out = []
    a = first
    stop = first + n_lamps
    while a < stop:
        b = min(stop, (a // block + 1) * block)
        out.append((a, b - a))
        a = b
    return out


def run_block(model: CityModel, seed: int, first: int, count: int, kernel: Kernel = lighting_block) -> BlockResult:
    """Failures and lighting of global lamps ``first .. first + count - 1`` (releases the GIL).

    ``kernel`` is ``lighting_block`` (the per-minute reference) or any kernel with its contract
    (``twin.kernels.lighting_events.event_kernel``: same law, its own random stream).
    """
    inputs = model.inputs
    d = inputs.district
    p = inputs.programs
    f = model.failures
    horizon = inputs.days * 1440.0
    ptr, start, end = lamp_outages(
        seed,
        first,
        count,
        f.age_lo_h,
        f.age_hi_h,
        FAILURE_DRAWS_PER_LAMP,
        f.driver_mtbf_h,
        f.wearout_shape,
        f.wearout_scale_h,
        f.repair_mean_h,
        horizon,
    )
    idx = np.arange(first, first + count) % d.n_lamps
    counters, energy, baseline, _, _, outage_dark, by_night, by_minute, boost_by_hour, plain_rated = kernel(
        seed,
        first,
        d.lamp_program[idx],
        d.lamp_area[idx],
        d.lamp_rated_w[idx],
        d.lamp_standby_w[idx],
        inputs.levels,
        inputs.first_lit,
        inputs.end_lit,
        model.tables,
        p.boost_level,
        p.boost_minutes,
        inputs.rates,
        inputs.dark_start,
        inputs.dark_end,
        ptr,
        start,
        end,
        False,
        np.zeros(0, dtype=np.int64),
        np.zeros(0),
    )
    return BlockResult(
        first,
        counters,
        energy,
        baseline,
        outage_dark,
        np.diff(ptr),
        by_night,
        by_minute,
        boost_by_hour,
        plain_rated,
    )


def run_blocks(
    model: CityModel,
    seed: int,
    plan: list[tuple[int, int]],
    threads: int = 1,
    progress: Progress | None = None,
    kernel: Kernel = lighting_block,
) -> list[BlockResult]:
    """Run the blocks of ``plan`` on ``threads`` threads; results in plan order."""

    def one(item: tuple[int, int]) -> BlockResult:
        result = run_block(model, seed, *item, kernel=kernel)
        if progress:
            progress(item[1])
        return result

    if threads <= 1:
        return [one(item) for item in plan]
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="twin-block") as pool:
        return list(pool.map(one, plan))


def combine(model: CityModel, blocks: Iterable[BlockResult]) -> CityResult:
    """Concatenate per-lamp outputs and add partial sums in block order (blocks sorted by first)."""
    ordered = sorted(blocks, key=lambda b: b.first)
    if not ordered:
        raise ValueError("no blocks")
    for a, b in itertools.pairwise(ordered):
        if a.first + a.energy.shape[0] != b.first:
            raise ValueError(f"blocks do not tile: {a.first}+{a.energy.shape[0]} then {b.first}")
    by_night = ordered[0].by_night.copy()
    by_minute = ordered[0].by_minute.copy()
    boost = ordered[0].boost_by_hour.copy()
    plain = ordered[0].plain_rated.copy()
    for b in ordered[1:]:
        by_night += b.by_night
        by_minute += b.by_minute
        boost += b.boost_by_hour
        plain += b.plain_rated
    return CityResult(
        first=ordered[0].first,
        counters=np.concatenate([b.counters for b in ordered]),
        energy=np.concatenate([b.energy for b in ordered]),
        baseline=np.concatenate([b.baseline for b in ordered]),
        outage_dark=np.concatenate([b.outage_dark for b in ordered]),
        failures=np.concatenate([b.failures for b in ordered]),
        by_night=by_night,
        by_hour=finish_by_hour(by_minute, plain, model.tables[0], boost),
        blocks=len(ordered),
    )


def run_city(
    model: CityModel,
    seed: int,
    n_lamps: int,
    *,
    first: int = 0,
    threads: int | None = None,
    block: int = BLOCK,
    progress: Progress | None = None,
    kernel: Kernel = lighting_block,
) -> CityResult:
    """Lamps ``first .. first + n_lamps - 1`` for the model's horizon, blocks on ``threads``.

    ``threads`` defaults to the cores this process may use; the result does not depend on it.
    """
    if threads is None:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    plan = block_plan(first, n_lamps, block)
    return combine(model, run_blocks(model, seed, plan, threads, progress, kernel))


def warm_kernels() -> float:
    """Compile (or load from the Numba cache) every kernel of a city run; returns seconds.

    A two-night, two-lamp run through the very functions :func:`run_city` calls, with the
    argument types it passes, so the first real block finds them compiled.
    """
    import time

    from twin.kernels.lighting_tables import dark_windows, program_levels, sun_table, switch_table

    t0 = time.perf_counter()
    offs = np.full(3, 480.0)
    zi, zf = np.zeros(1, np.int64), np.zeros(1)
    on, off = switch_table(20000, 2, 28.0, 105.0, offs, zi, zf, zi, zf)
    levels, first_lit, end_lit = program_levels(on, off, np.full(1, 100.0), np.zeros((1, 1)), np.zeros((1, 1)), zi)
    dark_start, dark_end = dark_windows(sun_table(20000, 3, 28.0, 105.0, offs), 2)
    tables = tuple(night_tables(levels, zf, dark_start, dark_end))
    ptr, start, end = lamp_outages(1, 0, 2, 0.0, 1e4, FAILURE_DRAWS_PER_LAMP, 1e3, 4.0, 1e5, 6.0, 2880.0)
    out = lighting_block(
        1, 0, np.zeros(2, np.int64), np.zeros(2, np.int64), np.full(2, 60.0), np.full(2, 1.0),
        levels, first_lit, end_lit, tables, zf, zf, np.ones((2, 24)), dark_start, dark_end,
        ptr, start, end, False, np.zeros(0, np.int64), np.zeros(0),
    )  # fmt: skip
    finish_by_hour(out[7], out[9], tables[0], out[8])
    return time.perf_counter() - t0
