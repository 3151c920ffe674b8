"""Same seed, same results, whatever runs the replications: in-process, local process pool,
or a real Dask cluster (scheduler and worker processes on loopback)."""

from __future__ import annotations

from pathlib import Path

import pytest

from twin.executors import run_replications
from twin.replication import replication_seeds


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.timeout(180)
def test_local_processes_and_dask_give_identical_kpis(tiny_scenario: Path) -> None:
    from distributed import LocalCluster

    seeds = replication_seeds(7, 2)
    serial = run_replications(str(tiny_scenario), None, seeds, 3, workers=1)
    pool = run_replications(str(tiny_scenario), None, seeds, 3, workers=2)
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0"
    ) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        dask = run_replications(str(tiny_scenario), None, seeds, 3, cluster=cluster.scheduler_address)
    assert [r["kpis"] for r in pool] == [r["kpis"] for r in serial]
    assert [r["kpis"] for r in dask] == [r["kpis"] for r in serial]
    assert serial[0]["kpis"] != serial[1]["kpis"], "replications must differ from each other"
