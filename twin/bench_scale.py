"""``twin bench --scale``: a city on this machine's cores, a province on a real Dask cluster.

Owns: the scale procedure and its figures (``bench-results/twin-scale.json``): JIT cold and
cached; the scenario's district (3,000 lamps) and a 100,000-lamp city for a year, on threads;
the plain-SimPy reference in the same run; then a province, 1,000,000 lamps (the district
tiled) for a year on ``dask scheduler`` + two ``dask worker`` processes started here on
loopback. The workers get the scenario as content and an empty Numba cache each (each compiles
its own kernels, timed apart), the memory high-water of every process is watched, and a
30,000-lamp slice of the province is recomputed in this process and compared bit for bit.
Every lamp row times the event kernel (``twin.bench.timed_city``; the district's year also the
per-minute one beside it): the city, the province's lamps on this machine's threads without a
cluster (the issue-22 aim: <= 60 s), and the province on Dask (``twin.province`` with
``event=True``; its slice check uses the same kernel).

Must not import: twin.sim, devtools, hardware.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from twin.bench import (
    BenchRow,
    Stage,
    _noop,
    cores,
    jit_rows,
    peak_row,
    reference_rows,
    timed_city,
    year_rows,
)
from twin.city import city_model, run_city
from twin.kernels.lighting_events import event_kernel
from twin.province import LoopbackCluster, MemoryWatch, ScenarioContent, connected, run_province, slice_of
from twin.scenario import load_scenario

CITY_AIM_S = 20.0
LOCAL_AIM_S = 60.0  # 1,000,000 lamps for a year on this machine's threads, no cluster (issue 22)
PROVINCE_AIM_S = 300.0
MEMORY_AIM_GIB = 8.0
PROVINCE_BLOCK = 2000  # lamps per block on the cluster (and in the slice recomputed here)

Lamps = Callable[[int, int], None]  # (lamps done so far, of total)


def _none(done: int, total: int) -> None:
    pass


def run_scale(
    scenario: str,
    days: int = 365,
    city_lamps: int = 100_000,
    province_lamps: int = 1_000_000,
    local_lamps: int = 1_000_000,
    slice_lamps: int = 30_000,
    workers: int = 2,
    worker_threads: int = 1,
    memory_limit: str = "3GiB",
    task_lamps: int = 20_000,
    sample_lamps: int = 20,
    sample_days: int = 7,
    threads: int | None = None,
    stage: Stage = _noop,
    lamps: Lamps = _none,
) -> list[BenchRow]:
    threads = threads or cores()
    rows = jit_rows(stage)
    model = city_model(load_scenario(scenario), days)
    n = model.district_lamps
    run_city(model, 1, min(n, 500), threads=threads)
    run_city(model, 1, min(n, 500), threads=threads, kernel=event_kernel)
    year, t_one = year_rows(model, days, threads, stage)
    rows += year
    stage(f"{city_lamps:,} lamps x {days} nights, {threads} threads")
    t_city = timed_city(model, 2, city_lamps, threads)
    aim = city_lamps == 100_000 and days == 365
    rows.append(
        BenchRow(
            f"{city_lamps:,} lamps x {days} nights, {threads} threads", f"{t_city:.1f} s",
            f"{city_lamps * days * 1440 / t_city / 1e6:,.0f} M lamp-minutes/s",
            f"<= {CITY_AIM_S:.0f} s" if aim else "", (t_city <= CITY_AIM_S) if aim else None, t_city, "s",
        )
    )  # fmt: skip
    if local_lamps > 0:
        stage(f"{local_lamps:,} lamps x {days} nights, {threads} threads, no cluster")
        t_local = timed_city(model, 3, local_lamps, threads)
        aim = local_lamps == 1_000_000 and days == 365
        rows.append(
            BenchRow(
                f"{local_lamps:,} lamps x {days} nights, {threads} threads, no cluster", f"{t_local:.1f} s",
                f"{local_lamps * days * 1440 / t_local / 1e6:,.0f} M lamp-minutes/s",
                f"<= {LOCAL_AIM_S:.0f} s" if aim else "", (t_local <= LOCAL_AIM_S) if aim else None, t_local, "s",
            )
        )  # fmt: skip
    stage("the plain-SimPy reference, same features, same run")
    rows += reference_rows(scenario, model, t_one, n * days * 1440, sample_lamps, sample_days)
    rows += province_rows(
        scenario, days, province_lamps, slice_lamps, workers, worker_threads, memory_limit, task_lamps, stage, lamps
    )
    rows.append(peak_row())
    rows.append(BenchRow("scenario", os.path.basename(scenario), f"{cores()} cores, {threads} threads"))
    return rows


def province_rows(
    scenario: str,
    days: int,
    n_lamps: int,
    slice_lamps: int,
    workers: int,
    worker_threads: int,
    memory_limit: str,
    task_lamps: int,
    stage: Stage,
    lamps: Lamps,
) -> list[BenchRow]:
    content = ScenarioContent.read(scenario)
    seed = 11
    stage(f"province: starting dask scheduler + {workers} dask workers on loopback")
    t_start = time.perf_counter()
    cluster = LoopbackCluster(workers=workers, nthreads=worker_threads, memory_limit=memory_limit)
    with cluster, MemoryWatch([os.getpid(), *cluster.pids]) as memory:
        with connected(cluster) as client:
            t_connected = time.perf_counter() - t_start
            stage(f"province: each worker compiles its kernels, then {n_lamps:,} lamps x {days} nights")
            done = 0

            def progress(k: int) -> None:
                nonlocal done
                done += k
                lamps(done, n_lamps)

            run = run_province(
                client, content, days, seed, n_lamps, block=PROVINCE_BLOCK, task_lamps=task_lamps,
                threads=worker_threads, progress=progress, event=True,
            )  # fmt: skip
        cpu = cluster.cpu_seconds()
        memory.stop()
    total = time.perf_counter() - t_start
    stage(f"province: the {slice_lamps:,}-lamp slice again, in this process")
    first = (n_lamps // 2) // PROVINCE_BLOCK * PROVINCE_BLOCK
    first = max(0, min(first, n_lamps - slice_lamps) // PROVINCE_BLOCK * PROVINCE_BLOCK)
    here_model = city_model(load_scenario(scenario), days)
    t0 = time.perf_counter()
    here = run_city(here_model, seed, slice_lamps, first=first, block=PROVINCE_BLOCK, kernel=event_kernel)
    t_slice = time.perf_counter() - t0
    same = here.equals(slice_of(here_model, run.blocks, first, slice_lamps))
    jit = ", ".join(f"{w['jit_s']:.1f}" for w in run.warm)
    peak_gib = memory.peak / 2**30
    hwm_gib = memory.hwm_sum / 2**30
    lamp_minutes = n_lamps * days * 1440
    energy_gwh = float(run.result.energy.sum()) / 60e9
    aim = n_lamps == 1_000_000 and days == 365
    return [
        BenchRow(
            f"province: {n_lamps:,} lamps x {days} nights on Dask ({workers} workers x {worker_threads} thread)",
            f"{total:.0f} s", f"cluster start to last result; {run.tasks} tasks of {task_lamps:,} lamps",
            f"<= {PROVINCE_AIM_S / 60:.0f} min" if aim else "", (total <= PROVINCE_AIM_S) if aim else None,
            total, "s",
        ),
        BenchRow(
            "province: of which computing (all workers warm)", f"{run.seconds:.0f} s",
            f"{lamp_minutes / run.seconds / 1e6:,.0f} M lamp-minutes/s; the cluster's processes used "
            f"{cpu:.0f} s of CPU in {total:.0f} s on {cores()} cores ({cpu / (total * cores()):.0%})",
            number=run.seconds, unit="s",
        ),
        BenchRow(
            "province: of which start + connect, each worker's own JIT (own empty cache)",
            f"{t_connected:.1f} s + {run.warm_seconds:.1f} s", f"per worker JIT {jit} s",
            number=t_connected + run.warm_seconds, unit="s",
        ),
        BenchRow(
            "province: peak memory, scheduler + workers + client (sampled sum of RSS)", f"{peak_gib:.2f} GiB",
            f"sum of each process's own high-water: {hwm_gib:.2f} GiB; worker limit {memory_limit}",
            f"<= {MEMORY_AIM_GIB:.0f} GiB", hwm_gib <= MEMORY_AIM_GIB, peak_gib, "GiB",
        ),
        BenchRow(
            f"province: lamps {first:,}..{first + slice_lamps - 1:,} on the cluster == this process",
            "identical" if same else "DIFFERENT",
            f"every per-lamp output and profile, bit for bit ({t_slice:.1f} s here)", "identical", same,
        ),
        BenchRow(
            "province: energy, failures", f"{energy_gwh:,.1f} GWh, {int(run.result.failures.sum()):,} failures",
            number=energy_gwh, unit="GWh",
        ),
    ]  # fmt: skip
