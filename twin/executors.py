"""Where replications run: local processes (default) or a Dask distributed cluster.

Owns: fanning replications out and collecting them in seed order. Each replication is a pure
function of (scenario, policy, seed, days), so the executor never changes a result.
Must not import: typer, rich (progress is a callback), matplotlib.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from typing import Any

from twin.replication import run_replication

Progress = Callable[[int], None]


def run_replications(
    scenario: str,
    policy: str | None,
    seeds: list[int],
    days: int | None,
    *,
    workers: int | None = None,
    cluster: str | None = None,
    progress: Progress | None = None,
) -> list[dict[str, Any]]:
    """Run one replication per seed; results come back in ``seeds`` order."""
    scenario = os.path.abspath(scenario)
    policy = os.path.abspath(policy) if policy else None
    results: dict[int, dict[str, Any]] = {}
    if cluster:
        from distributed import Client
        from distributed import as_completed as dask_completed

        with Client(cluster, timeout="20s") as client:  # type: ignore[no-untyped-call]
            futures = {
                client.submit(run_replication, scenario, policy, s, days, pure=False): i for i, s in enumerate(seeds)
            }
            for future in dask_completed(list(futures)):  # type: ignore[no-untyped-call]
                results[futures[future]] = future.result()
                if progress:
                    progress(1)
    elif (workers or 0) == 1 or len(seeds) == 1:
        for i, s in enumerate(seeds):
            results[i] = run_replication(scenario, policy, s, days)
            if progress:
                progress(1)
    else:
        n = workers or min(len(seeds), os.cpu_count() or 1)
        # spawn, not fork: forking a process that has started threads (numba, rich) is unsafe.
        with ProcessPoolExecutor(max_workers=n, mp_context=get_context("spawn")) as pool:
            pending = {pool.submit(run_replication, scenario, policy, s, days): i for i, s in enumerate(seeds)}
            for future in as_completed(pending):
                results[pending[future]] = future.result()
                if progress:
                    progress(1)
    return [results[i] for i in range(len(seeds))]
