"""Store durability: commits with synchronous=NORMAL, ``await store.sync()`` fsyncs the WAL on a
thread of its own (group commit), the WAL keeps its inode, a SIGKILL loses nothing that was
reported synced.

Run by hand for the group-commit micro-benchmark: ``python tests/test_store_durability.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest

from edge_agent.store.db import Store
from edge_agent.store.outbox import ALERT_PRIORITY
from edge_agent.store.walsync import THREAD_NAME, Checkpointer, WalFile

REAL_FSYNC = os.fsync


def _wal(store: Store) -> Path:
    return Path(str(store.path) + "-wal")


class FsyncSpy:
    """Wraps os.fsync: counts the fsyncs of one file (by inode, whatever its fd), optionally
    slow or failing in the syncer thread only, and always ends in the real fsync."""

    def __init__(self, wal: Path) -> None:
        self.wal = wal
        self.calls = 0
        self.delay = 0.0
        self.fail: OSError | None = None
        self.threads: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, fd: int) -> None:
        if threading.current_thread().name == THREAD_NAME:
            if self.delay:
                time.sleep(self.delay)
            if self.fail is not None:
                raise self.fail
        try:
            on_disk = os.stat(self.wal)
        except FileNotFoundError:
            on_disk = None
        mine = os.fstat(fd)
        if on_disk is not None and (mine.st_ino, mine.st_dev) == (on_disk.st_ino, on_disk.st_dev):
            with self._lock:
                self.calls += 1
                self.threads.add(threading.current_thread().name)
        REAL_FSYNC(fd)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store(tmp_path / "gw.sqlite3")
    yield opened
    opened.close()


@pytest.fixture
def spy(store: Store, monkeypatch: pytest.MonkeyPatch) -> FsyncSpy:
    watcher = FsyncSpy(_wal(store))
    monkeypatch.setattr(os, "fsync", watcher)
    return watcher


def _commit(store: Store, n: int, *, durable: bool = False, link: str = "north") -> None:
    with store.transaction(durable=durable):
        store.outbox.enqueue(link, f"t/{n}", b"x" * 100, priority=ALERT_PRIORITY, now=float(n), msg_id=f"m{n}")


# ----- the connection and sync() ----------------------------------------------------------------
def test_commits_do_not_fsync_the_store_connection_runs_wal_normal(store: Store) -> None:
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 1, "NORMAL: a commit does not fsync"
    assert store.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0


async def test_sync_fsyncs_the_wal_after_commits_and_only_then(store: Store, spy: FsyncSpy) -> None:
    await store.sync()  # the fsync every store does once it is open (maybe before the spy was in place)
    before = spy.calls
    _commit(store, 1)
    await store.sync()
    assert spy.calls == before + 1, "one fsync of the -wal file"
    assert spy.threads == {THREAD_NAME}, "never on the event loop's thread"
    await store.sync()
    with store.transaction():
        store.outbox.pending("north")  # a read-only transaction writes nothing
    await store.sync()
    assert spy.calls == before + 1, "nothing committed since: no fsync"
    store.outbox.enqueue("north", "outside", b"y", priority=ALERT_PRIORITY, now=2.0)  # autocommit
    await store.sync()
    assert spy.calls == before + 2, "a statement outside a transaction is a commit too"
    stats = store.sync_stats()
    assert stats["synced"] == stats["committed"]


async def test_concurrent_syncs_share_fsyncs_group_commit(store: Store, spy: FsyncSpy) -> None:
    await store.sync()
    spy.delay = 0.05
    before = spy.calls
    done: list[int] = []

    async def one(n: int) -> None:
        _commit(store, n)
        await store.sync()
        done.append(n)

    await asyncio.gather(*(one(n) for n in range(200)))
    assert sorted(done) == list(range(200))
    fsyncs = spy.calls - before
    assert 1 <= fsyncs <= 4, f"200 concurrent waiters took {fsyncs} fsyncs"


async def test_a_waiter_arriving_during_an_fsync_waits_for_the_next_one(store: Store, spy: FsyncSpy) -> None:
    await store.sync()
    spy.delay = 0.2
    _commit(store, 1)
    first = asyncio.ensure_future(store.sync())
    await asyncio.sleep(0.05)  # the fsync for commit 1 is running
    _commit(store, 2)
    second = asyncio.ensure_future(store.sync())
    await first
    assert not second.done(), "commit 2 came after the running fsync started"
    calls = spy.calls
    await second
    assert spy.calls == calls + 1


async def test_sync_does_not_block_the_event_loop(store: Store, spy: FsyncSpy) -> None:
    await store.sync()
    spy.delay = 0.2
    gaps: list[float] = []
    running = True

    async def ticker() -> None:
        last = time.perf_counter()
        while running:
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0.03)
    waits: list[float] = []
    commits: list[float] = []
    for n in range(3):
        started = time.perf_counter()
        _commit(store, n, durable=True)
        commits.append(time.perf_counter() - started)
        started = time.perf_counter()
        await store.sync()
        waits.append(time.perf_counter() - started)
    running = False
    await tick
    assert min(waits) >= 0.15, f"sync() must wait for the (slow) fsync: {waits}"
    assert max(commits) < 0.1, f"a durable commit must not fsync inline: {commits}"
    assert len(gaps) >= 30
    assert max(gaps) < 0.1, f"the loop stalled for {max(gaps) * 1000:.0f} ms while fsyncs took 200 ms"


async def test_a_durable_commit_is_synced_without_anyone_waiting(store: Store, spy: FsyncSpy) -> None:
    await store.sync()
    before = spy.calls
    _commit(store, 1, durable=False)
    await asyncio.sleep(0.2)
    assert spy.calls == before, "telemetry waits for the next sync or checkpoint"
    _commit(store, 2, durable=True)
    deadline = time.monotonic() + 5
    while store.sync_stats()["synced"] < store.sync_stats()["committed"]:
        assert time.monotonic() < deadline, "the durable commit was never synced"
        await asyncio.sleep(0.01)
    assert spy.calls == before + 1


async def test_a_failed_fsync_is_an_error_then_and_later(store: Store, spy: FsyncSpy) -> None:
    await store.sync()
    spy.fail = OSError(errno.EIO, "Input/output error")
    _commit(store, 1)
    with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
        await store.sync()
    spy.fail = None
    _commit(store, 2)
    with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
        await store.sync()  # after a failed fsync the kernel may have dropped the pages


async def test_sync_inside_a_transaction_is_refused(store: Store) -> None:
    with store.transaction():
        _ = store.outbox.enqueue("north", "t", b"x", priority=ALERT_PRIORITY, now=0.0)
        with pytest.raises(RuntimeError, match="commit first"):
            await store.sync()


async def test_memory_store_sync_returns_at_once() -> None:
    store = Store(":memory:")
    try:
        _commit(store, 1)
        await asyncio.wait_for(store.sync(), 0.01)
    finally:
        store.close()


def test_close_fsyncs_and_stops_the_syncer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(tmp_path / "gw.sqlite3")
    spy = FsyncSpy(_wal(store))
    monkeypatch.setattr(os, "fsync", spy)
    deadline = time.monotonic() + 5
    while store.sync_stats()["fsyncs"] < 1:  # the fsync at open
        assert time.monotonic() < deadline
        time.sleep(0.01)
    calls = spy.calls
    _commit(store, 1)
    store.close()
    assert spy.calls == calls + 1, "close() fsyncs what was committed"
    assert THREAD_NAME not in {t.name for t in threading.enumerate()}
    assert not _wal(store).exists(), "checkpointed into the database, the last connection removed the WAL"
    reopened = Store(tmp_path / "gw.sqlite3")
    try:
        assert [m.msg_id for m in reopened.outbox.pending("north")] == ["m1"]
    finally:
        reopened.close()


# ----- the WAL file -----------------------------------------------------------------------------
async def test_the_wal_keeps_its_inode_across_checkpoints_and_other_connections(store: Store, spy: FsyncSpy) -> None:
    """The assumption behind opening ``-wal`` once: while a connection stays open, SQLite
    restarts the WAL in the same file after a checkpoint (TRUNCATE only shortens it)."""
    wal = _wal(store)
    _commit(store, 0)
    inode = wal.stat().st_ino
    n = 1
    for mode in ("PASSIVE", "RESTART", "TRUNCATE", "PASSIVE", "TRUNCATE"):
        for _ in range(20):
            _commit(store, n)
            n += 1
        other = sqlite3.connect(str(store.path), isolation_level=None)  # as the policy store does
        busy, _, _ = other.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
        other.close()  # not the last connection: the WAL stays
        assert busy == 0
        if mode == "TRUNCATE":
            assert wal.stat().st_size == 0
        _commit(store, n)  # the next commit restarts the WAL from offset 0
        n += 1
        assert wal.stat().st_ino == inode, f"a new -wal file after {mode}"
        calls = spy.calls
        await store.sync()
        assert spy.calls == calls + 1, "the syncer's fd is the live -wal file"
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # and from the store's own connection
    _commit(store, n)
    assert wal.stat().st_ino == inode
    assert store.integrity_ok()
    assert len(store.outbox.pending("north", limit=1_000)) == n + 1


async def test_the_wal_stays_bounded_under_a_flood_of_batches(tmp_path: Path) -> None:
    """A QoS 1 flood handled as the agent handles it: a batch of savepointed inserts, COMMIT,
    its sync() left running while the next batch begins at once (no idle moment). SQLite
    rewinds the WAL only at a BEGIN that finds every frame copied back, which checkpoints on
    another connection never achieve against such a writer: the WAL grew without end (about
    2 KB a row here). It must stay bounded, every sync() must return, and every row must be
    there after reopening."""
    store = Store(tmp_path / "flood.sqlite3")
    wal = _wal(store)
    await store.sync()
    inode = wal.stat().st_ino
    # rewound at 8 MiB; what the writer adds while a checkpoint waits for a slow fsync on a
    # shared machine comes on top (up to 50 MiB seen at 150 MB/s): a loose bound on the largest
    # size, a tight one on the typical size
    bound = 8 * Checkpointer.RESTART_BYTES
    syncs: list[asyncio.Future[None]] = []
    sizes: list[int] = []
    rows = 0
    try:
        for _ in range(300):  # 60,000 rows: some 130 MB of WAL if it were never rewound
            store.begin_batch()
            for _ in range(200):
                with store.transaction():
                    store.inbox.first_time("lamp-1", rows, float(rows))
                    store.outbox.enqueue("north", f"t/{rows}", b"x" * 200, priority=ALERT_PRIORITY, now=float(rows))
                rows += 1
            assert store.commit_batch()
            future = store.synced()
            if future is not None:
                syncs.append(future)
            sizes.append(wal.stat().st_size)
            assert sizes[-1] < bound, f"the WAL reached {sizes[-1] >> 20} MiB after {rows} rows"
            await asyncio.sleep(0)
        await asyncio.wait_for(asyncio.gather(*syncs), 30)
        typical = sorted(sizes)[len(sizes) // 2]
        assert typical <= 2 * Checkpointer.RESTART_BYTES, f"the WAL was {typical >> 20} MiB half the time"
        assert wal.stat().st_ino == inode, "rewound in place: the syncer's fd stays the live -wal"
    finally:
        store.close()
    reopened = Store(tmp_path / "flood.sqlite3")
    try:
        assert reopened.integrity_ok()
        assert reopened.db.execute("SELECT count(*) FROM inbox").fetchone()[0] == rows
        assert reopened.db.execute("SELECT count(*) FROM outbox").fetchone()[0] == rows
    finally:
        reopened.close()


def test_the_wal_fd_is_reopened_when_the_file_is_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "x.sqlite3-wal"
    synced: list[int] = []

    def fsync(fd: int) -> None:
        synced.append(os.fstat(fd).st_ino)
        REAL_FSYNC(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    wal = WalFile(path)
    assert wal.fsync() is False, "no -wal file: nothing to fsync"
    path.write_bytes(b"one")
    assert wal.fsync() is True
    first = path.stat().st_ino
    assert synced[-1] == first
    (tmp_path / "new").write_bytes(b"two")
    os.replace(tmp_path / "new", path)
    second = path.stat().st_ino
    assert second != first
    assert wal.fsync() is True
    assert synced[-1] == second, "the fsync went to the new file"
    assert wal.opens == 2
    assert wal.fsync() is True
    assert wal.opens == 2, "re-opened only when replaced"
    path.unlink()
    assert wal.fsync() is False
    assert wal.fd is None
    wal.close()


# ----- a crash ----------------------------------------------------------------------------------
CHILD = r"""
import asyncio, os, sys
from edge_agent.store.db import Store
from edge_agent.store.outbox import ALERT_PRIORITY, TELEMETRY_PRIORITY

path, base = sys.argv[1], int(sys.argv[2])
WORKERS = 8

async def worker(store, k):
    i = base + k
    while True:
        with store.transaction(durable=True):
            store.outbox.enqueue("north", "alert", b"a" * 64, priority=ALERT_PRIORITY, now=float(i), msg_id=f"id-{i}")
            store.outbox.enqueue("south", "tel", os.urandom(300), priority=TELEMETRY_PRIORITY, now=float(i))
        await store.sync()
        os.write(1, f"{i}\n".encode())  # only now is the commit reported as synced
        i += WORKERS

async def deliverer(store):
    while True:
        await asyncio.sleep(0.002)
        store.outbox.delivered([m.seq for m in store.outbox.pending("south", limit=20)])

async def main():
    store = Store(path, quota_bytes=40_000)  # telemetry is evicted, too
    await asyncio.gather(deliverer(store), *(worker(store, k) for k in range(WORKERS)))

asyncio.run(main())
"""


def _drain(out: IO[bytes], into: list[bytes]) -> None:
    while chunk := out.read1(65536):  # type: ignore[attr-defined]
        into.append(chunk)


def test_sigkill_loses_nothing_reported_as_synced(tmp_path: Path) -> None:
    """A child commits alerts from 8 interleaved tasks, plus telemetry that is delivered and
    evicted, and reports each alert id once ``await store.sync()`` returned; we SIGKILL it at a
    random moment, reopen the database and find every reported id, a sound database and a
    running total that matches it. Three rounds on the same file (recovery, then more commits).

    SIGKILL does not lose the OS page cache, so this proves ordering and atomicity (sync()
    returns only after the commit, a kill mid-transaction or mid-checkpoint leaves a database
    SQLite recovers), not survival of a power cut: that rests on the fsync tests above.
    """
    db = tmp_path / "crash.sqlite3"
    rng = random.Random()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    for round_no in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(db), str(round_no * 10_000_000)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        chunks: list[bytes] = []
        assert proc.stdout is not None
        out = proc.stdout
        reader = threading.Thread(target=_drain, args=(out, chunks))
        reader.start()
        deadline = time.monotonic() + 30
        while b"".join(chunks).count(b"\n") < 50:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the child reported nothing"
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.6))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        reader.join(10)
        assert proc.returncode == -signal.SIGKILL
        assert proc.stderr is not None
        proc.stderr.close()
        out.close()
        text = b"".join(chunks).decode()
        reported = {f"id-{line}" for line in text.split("\n")[:-1]}  # the last piece may be cut
        assert len(reported) >= 50
        store = Store(db, quota_bytes=40_000)
        try:
            assert store.integrity_ok()
            present = {row[0] for row in store.db.execute("SELECT msg_id FROM outbox WHERE priority = 0")}
            missing = reported - present
            assert not missing, f"round {round_no}: {len(missing)} ids reported synced are gone"
            assert store.outbox.queued_bytes == store.outbox.outbox_bytes()
        finally:
            store.close()


# ----- micro-benchmark (run by hand) -------------------------------------------------------------
class _LoopWatch:
    """The longest the event loop went without running a 1 ms ticker (its worst stall)."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(0.001)
            self.worst = max(self.worst, time.perf_counter() - started - 0.001)

    def __enter__(self) -> _LoopWatch:
        self._task = asyncio.get_running_loop().create_task(self._tick())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def _bench_store(directory: Path, commits: int, tasks: int) -> dict[str, float]:
    store = Store(directory / f"bench-{tasks}.sqlite3")
    await store.sync()
    worst_commit = 0.0
    sync_waits: list[float] = []
    payload = os.urandom(150)

    async def one(k: int, count: int) -> None:
        nonlocal worst_commit
        for i in range(count):
            started = time.perf_counter()
            with store.transaction(durable=True):
                store.outbox.enqueue(
                    "north", "alert", payload, priority=ALERT_PRIORITY, now=float(i), msg_id=f"{k}-{i}"
                )
            worst_commit = max(worst_commit, time.perf_counter() - started)
            started = time.perf_counter()
            await store.sync()
            sync_waits.append(time.perf_counter() - started)

    fsyncs = store.sync_stats()["fsyncs"]
    with _LoopWatch() as watch:
        started = time.perf_counter()
        await asyncio.gather(*(one(k, commits // tasks) for k in range(tasks)))
        elapsed = time.perf_counter() - started
    fsyncs = store.sync_stats()["fsyncs"] - fsyncs
    store.close()
    sync_waits.sort()
    return {
        "commits_per_s": commits / elapsed,
        "fsyncs": fsyncs,
        "loop_max_stall_ms": watch.worst * 1000,
        "max_commit_ms": worst_commit * 1000,
        "sync_p50_ms": sync_waits[len(sync_waits) // 2] * 1000,
        "sync_p99_ms": sync_waits[int(len(sync_waits) * 0.99)] * 1000,
    }


async def _bench_inline_full(directory: Path, commits: int, tasks: int) -> dict[str, float]:
    """The old way, for comparison: synchronous=FULL, every COMMIT fsyncs on the loop."""
    db = sqlite3.connect(str(directory / f"inline-{tasks}.sqlite3"), isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA wal_autocheckpoint=0")
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, payload BLOB)")
    payload = os.urandom(150)
    worst_commit = 0.0

    async def one(count: int) -> None:
        nonlocal worst_commit
        for _ in range(count):
            began = time.perf_counter()
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO t (payload) VALUES (?)", (payload,))
            db.execute("COMMIT")
            worst_commit = max(worst_commit, time.perf_counter() - began)
            await asyncio.sleep(0)  # where the new code awaits sync()

    with _LoopWatch() as watch:
        started = time.perf_counter()
        await asyncio.gather(*(one(commits // tasks) for _ in range(tasks)))
        elapsed = time.perf_counter() - started
    db.close()
    return {
        "commits_per_s": commits / elapsed,
        "fsyncs": commits,
        "loop_max_stall_ms": watch.worst * 1000,
        "max_commit_ms": worst_commit * 1000,
    }


def benchmark(directory: Path | None = None, commits: int = 5_000) -> dict[str, dict[str, float]]:
    """Durable commits, each followed by ``await store.sync()``: one task after the other, then
    1,000 interleaved tasks; and the old inline-FULL commit for comparison."""

    async def main(where: Path) -> dict[str, dict[str, float]]:
        return {
            "sequential (1 task)": await _bench_store(where, commits, 1),
            "interleaved (1,000 tasks)": await _bench_store(where, commits, 1_000),
            "old inline FULL, 1 task": await _bench_inline_full(where, commits, 1),
            "old inline FULL, 1,000 tasks": await _bench_inline_full(where, commits, 1_000),
        }

    with contextlib.ExitStack() as stack:
        where = directory or Path(stack.enter_context(tempfile.TemporaryDirectory(dir=Path.cwd())))
        return asyncio.run(main(where))


def _print(results: dict[str, dict[str, float]], show: Callable[[str], None] = print) -> None:
    for name, figures in results.items():
        show(f"{name:30s} " + "  ".join(f"{key}={value:,.1f}" for key, value in figures.items()))


if __name__ == "__main__":
    _print(benchmark(Path(sys.argv[1]) if len(sys.argv) > 1 else None))
