"""A province on a real Dask cluster equals one process: ``dask scheduler`` and two ``dask worker``
processes started on loopback (not LocalCluster), the scenario shipped as content, then stopped."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import psutil
import pytest

from twin.bench_warm import warm_event_kernels
from twin.city import city_model, run_city, warm_kernels
from twin.kernels.lighting_events import event_kernel
from twin.province import LoopbackCluster, MemoryWatch, ScenarioContent, connected, run_province, slice_of
from twin.scenario import load_scenario

DAYS = 3


def test_content_loads_without_the_original_files(tiny_scenario: Path, tmp_path: Path) -> None:
    content = ScenarioContent.read(tiny_scenario)
    assert set(content.files) == {"tiny.toml", "policies/naxi-standard.toml"}
    shutil.rmtree(tiny_scenario.parent / "policies")  # the client's files are gone
    loaded = content.load(tmp_path / "elsewhere")
    assert loaded.spec.scenario.name == "tiny"
    assert content.digest() == ScenarioContent.read(tmp_path / "elsewhere" / "tiny.toml").digest()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.timeout(120)
def test_dask_cluster_result_equals_the_single_process_run(tiny_scenario: Path) -> None:
    warm_kernels()  # the workers share this cache here (the bench gives each its own, empty)
    warm_event_kernels()
    content = ScenarioContent.read(tiny_scenario)
    cluster = LoopbackCluster(workers=2, nthreads=1, memory_limit="1GiB", private_cache=False)
    with cluster, MemoryWatch([os.getpid(), *cluster.pids]) as memory:
        pids = list(cluster.pids)
        assert len(pids) == 3
        assert cluster.address.startswith("tcp://127.0.0.1:")
        with connected(cluster) as client:
            workers = client.scheduler_info(n_workers=-1)["workers"]
            assert len(workers) == 2
            assert all(w.startswith("tcp://127.0.0.1:") for w in workers)
            run = run_province(client, content, DAYS, 5, 2000, block=1000, task_lamps=1000)
            events = run_province(client, content, DAYS, 5, 2000, block=1000, task_lamps=1000, event=True)
        assert cluster.cpu_seconds() > 0
    assert all(not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE for pid in pids)
    assert run.tasks == 2
    assert len({w["pid"] for w in run.warm}) == 2, "each worker warms its own kernels"
    assert memory.peak > 0 and memory.hwm_sum >= memory.peak * 0.5

    model = city_model(load_scenario(tiny_scenario), DAYS)
    here = run_city(model, 5, 2000, block=1000, threads=2)
    assert here.equals(run.result)
    assert here.failures.sum() > 0
    assert slice_of(model, run.blocks, 1000, 1000).equals(run_city(model, 5, 1000, first=1000, block=1000))
    # The event kernel on the workers (what twin bench --scale times) == the event kernel here.
    here_events = run_city(model, 5, 2000, block=1000, threads=2, kernel=event_kernel)
    assert here_events.equals(events.result)
    assert not here_events.equals(here), "the event kernel draws its own motion stream"
    assert (here_events.failures == here.failures).all(), "failures come from the same per-lamp stream"
