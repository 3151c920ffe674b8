"""A province on a real Dask cluster: ``dask scheduler`` and ``dask worker`` processes started here.

Owns: a loopback cluster of subprocesses (:class:`LoopbackCluster`: free ports, stopped in a
``finally``), the scenario shipped as content (:class:`ScenarioContent`: the bytes of the
scenario, its policy and lamp file, never a path), each worker warming its own JIT cache,
blocks of lamps as tasks (``twin.city``), and the memory high-water of every process involved
(:class:`MemoryWatch`). Results are combined in block order: identical to one process.

Must not import: simpy, twin.sim, typer, rich (progress is a callback).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from twin.city import BLOCK, BlockResult, CityModel, CityResult, block_plan, city_model, combine, run_blocks
from twin.scenario import LoadedScenario, load_scenario

Progress = Callable[[int], None]


@dataclass(frozen=True)
class ScenarioContent:
    """A scenario as bytes: the scenario file, its policy and lamp file, by path relative to a root."""

    scenario: str
    files: dict[str, bytes]

    @classmethod
    def read(cls, path: str | Path) -> ScenarioContent:
        loaded = load_scenario(path)
        scenario = Path(path).resolve()
        paths = [scenario, Path(loaded.policy_path).resolve()]
        if loaded.spec.district.lamps_file is not None:
            paths.append((scenario.parent / loaded.spec.district.lamps_file).resolve())
        root = Path(os.path.commonpath([str(p.parent) for p in paths]))
        files = {str(p.relative_to(root)): p.read_bytes() for p in paths}
        return cls(scenario=str(scenario.relative_to(root)), files=files)

    def digest(self) -> str:
        h = hashlib.sha256(self.scenario.encode())
        for name in sorted(self.files):
            h.update(name.encode())
            h.update(hashlib.sha256(self.files[name]).digest())
        return h.hexdigest()[:16]

    def load(self, where: Path) -> LoadedScenario:
        """Write the files under ``where`` (this process's own copy) and load the scenario there."""
        for name, data in self.files.items():
            target = where / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        return load_scenario(where / self.scenario)


_MODELS: dict[tuple[str, int], CityModel] = {}
_MODEL_LOCK = threading.Lock()


def model_from_content(content: ScenarioContent, days: int) -> CityModel:
    """The city model of ``content`` in this process (built once per process, then reused)."""
    key = (content.digest(), days)
    with _MODEL_LOCK:
        if key not in _MODELS:
            with tempfile.TemporaryDirectory(prefix=f"twin-scenario-{key[0]}-") as where:
                _MODELS[key] = city_model(content.load(Path(where)), days)
        return _MODELS[key]


def warm_worker(content: ScenarioContent, days: int, event: bool = False) -> dict[str, Any]:
    """Run on each worker: compile (or load) the kernels into its own cache, build the model.

    ``event``: the event kernel's set (``twin.bench_warm``), else the per-minute kernel's.
    """
    if event:
        from twin.bench_warm import warm_event_kernels

        jit = warm_event_kernels()
    else:
        from twin.city import warm_kernels

        jit = warm_kernels()
    t0 = time.perf_counter()
    model_from_content(content, days)
    return {
        "pid": os.getpid(),
        "jit_s": jit,
        "model_s": time.perf_counter() - t0,
        "numba_cache_dir": os.environ.get("NUMBA_CACHE_DIR", ""),
    }


def province_task(
    content: ScenarioContent, days: int, seed: int, plan: list[tuple[int, int]], threads: int = 1, event: bool = False
) -> list[BlockResult]:
    """One Dask task: the blocks of ``plan`` (consecutive lamps), on the worker's own model.

    ``event``: the event kernel (``twin.kernels.lighting_events``), else the per-minute one.
    """
    model = model_from_content(content, days)
    if event:
        from twin.kernels.lighting_events import event_kernel

        return run_blocks(model, seed, plan, threads, kernel=event_kernel)
    return run_blocks(model, seed, plan, threads)


class MemoryWatch:
    """High-water of the summed resident memory of some processes (and their children).

    Samples every ``interval`` seconds in a thread; ``peak`` is the largest simultaneous sum
    seen, ``hwm_sum`` (after :meth:`stop`) the sum of each process's own high-water (``VmHWM``),
    an upper bound that sampling cannot miss.
    """

    def __init__(self, pids: list[int], interval: float = 0.2) -> None:
        self.pids = pids
        self.interval = interval
        self.peak = 0
        self.hwm: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-watch", daemon=True)

    def _processes(self) -> list[psutil.Process]:
        out: dict[int, psutil.Process] = {}  # by pid: the cluster's processes are the client's children
        for pid in self.pids:
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(pid)
                out[proc.pid] = proc
                out.update((c.pid, c) for c in proc.children(recursive=True))
        return list(out.values())

    def sample(self) -> None:
        total = 0
        for proc in self._processes():
            with contextlib.suppress(psutil.Error, OSError, ValueError):
                total += proc.memory_info().rss
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        self.hwm[proc.pid] = max(self.hwm.get(proc.pid, 0), int(line.split()[1]) * 1024)
        self.peak = max(self.peak, total)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> MemoryWatch:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join()
            self.sample()

    @property
    def hwm_sum(self) -> int:
        return sum(self.hwm.values())


@dataclass
class LoopbackCluster:
    """``dask scheduler`` + ``workers`` x ``dask worker`` on 127.0.0.1, as subprocesses.

    ``private_cache``: each worker gets its own empty ``NUMBA_CACHE_DIR`` (it compiles the
    kernels itself, as a machine that never saw the client's files would); otherwise the
    workers inherit this process's cache directory.
    """

    workers: int = 2
    nthreads: int = 1
    memory_limit: str = "3GiB"
    private_cache: bool = True
    start_timeout: float = 60.0
    address: str = ""
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def start(self) -> LoopbackCluster:
        self._tmp = tempfile.TemporaryDirectory(prefix="twin-cluster-")
        root = Path(self._tmp.name)
        bin_dir = Path(sys.executable).parent
        dask = str(bin_dir / "dask") if (bin_dir / "dask").exists() else "dask"
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        sched_file = root / "scheduler.json"
        self._spawn(
            [dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
             "--scheduler-file", str(sched_file), "--idle-timeout", "15 minutes"],
            env, root / "scheduler.log", root,
        )  # fmt: skip
        deadline = time.monotonic() + self.start_timeout
        while not sched_file.exists():
            self._check_alive(root)
            if time.monotonic() > deadline:
                raise RuntimeError(f"dask scheduler did not start in {self.start_timeout:.0f} s")
            time.sleep(0.1)
        import json

        for _ in range(50):
            with contextlib.suppress(ValueError):
                self.address = json.loads(sched_file.read_text())["address"]
                break
            time.sleep(0.1)
        for i in range(self.workers):
            home = root / f"worker-{i}"
            home.mkdir()
            wenv = dict(env)
            wenv["TMPDIR"] = str(home)  # the worker's copy of the scenario goes here
            if self.private_cache:
                wenv["NUMBA_CACHE_DIR"] = str(home / "numba-cache")
            self._spawn(
                [dask, "worker", self.address, "--host", "127.0.0.1", "--nthreads", str(self.nthreads),
                 "--memory-limit", self.memory_limit, "--no-dashboard", "--name", f"twin-{i}",
                 "--local-directory", str(home), "--death-timeout", "60"],
                wenv, root / f"worker-{i}.log", home,
            )  # fmt: skip
        return self

    def _spawn(self, cmd: list[str], env: dict[str, str], log: Path, cwd: Path) -> None:
        with log.open("wb") as out:
            self.procs.append(subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT))

    def _check_alive(self, root: Path) -> None:
        for p in self.procs:
            if p.poll() is not None:
                logs = "\n".join(f.read_text()[-2000:] for f in sorted(root.glob("*.log")))
                raise RuntimeError(f"a dask process exited with status {p.returncode}:\n{logs}")

    def wait_for_workers(self, client: Any) -> None:
        deadline = time.monotonic() + self.start_timeout
        while len(client.scheduler_info(n_workers=-1)["workers"]) < self.workers:
            if self._tmp is not None:
                self._check_alive(Path(self._tmp.name))
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.workers} dask workers did not connect in {self.start_timeout:.0f} s")
            time.sleep(0.2)

    def cpu_seconds(self) -> float:
        """User + system CPU time so far of the scheduler and workers (nanny and worker processes)."""
        total = 0.0
        for p in self.procs:
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(p.pid)
                for q in (proc, *proc.children(recursive=True)):
                    with contextlib.suppress(psutil.Error):
                        times = q.cpu_times()
                        total += times.user + times.system
        return total

    def stop(self) -> None:
        """Stop the workers, then the scheduler (SIGTERM, then SIGKILL for what remains)."""
        for p in reversed(self.procs):  # workers first
            children = []
            with contextlib.suppress(psutil.Error):
                children = psutil.Process(p.pid).children(recursive=True)
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=10)
            for child in children:  # a nanny's worker process, should it outlive the nanny
                with contextlib.suppress(psutil.Error):
                    child.kill()
        self.procs.clear()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> LoopbackCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class ProvinceRun:
    result: CityResult
    blocks: list[BlockResult]
    seconds: float  # blocks computed (after every worker was warm)
    warm: list[dict[str, Any]]
    warm_seconds: float  # cluster start + connect + every worker's JIT and model
    tasks: int


@contextlib.contextmanager
def connected(cluster: LoopbackCluster) -> Iterator[Any]:
    from distributed import Client

    client = Client(cluster.address, timeout="30s")  # type: ignore[no-untyped-call]
    try:
        cluster.wait_for_workers(client)
        yield client
    finally:
        client.close()  # type: ignore[no-untyped-call]


def run_province(
    client: Any,
    content: ScenarioContent,
    days: int,
    seed: int,
    n_lamps: int,
    *,
    block: int = BLOCK,
    task_lamps: int = 10_000,
    threads: int = 1,
    progress: Progress | None = None,
    event: bool = False,
) -> ProvinceRun:
    """``n_lamps`` lamps on the cluster behind ``client``: every worker warmed, then the blocks.

    ``event``: the event kernel on the workers (else the per-minute reference kernel).
    """
    from distributed import as_completed

    t0 = time.perf_counter()
    warm = list(client.run(warm_worker, content, days, event).values())
    warm_seconds = time.perf_counter() - t0
    plan = block_plan(0, n_lamps, block)
    per_task = max(1, task_lamps // block)
    tasks = [plan[i : i + per_task] for i in range(0, len(plan), per_task)]
    # hash=False: a key of its own, so the previous call's copy of the same content being
    # released cannot take this call's with it ("lost dependencies")
    shipped = client.scatter(content, broadcast=True, hash=False)
    t0 = time.perf_counter()
    futures = [
        client.submit(province_task, shipped, days, seed, part, threads, event, pure=False, key=f"province-{i}")
        for i, part in enumerate(tasks)
    ]
    blocks: list[BlockResult] = []
    for future in as_completed(futures):  # type: ignore[no-untyped-call]
        got = future.result()
        blocks.extend(got)
        future.release()
        if progress:
            progress(sum(b.energy.shape[0] for b in got))
    seconds = time.perf_counter() - t0
    model = model_from_content(content, days)
    return ProvinceRun(combine(model, blocks), blocks, seconds, warm, warm_seconds, len(tasks))


def slice_of(model: CityModel, blocks: list[BlockResult], first: int, n_lamps: int) -> CityResult:
    """The combined result of the blocks covering lamps ``first .. first + n_lamps - 1`` exactly."""
    chosen = [b for b in blocks if first <= b.first < first + n_lamps]
    got = sum(b.energy.shape[0] for b in chosen)
    if got != n_lamps or min(b.first for b in chosen) != first:
        raise ValueError("the slice must start and end on block boundaries")
    return combine(model, chosen)
