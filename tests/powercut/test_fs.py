"""The power-cut file system loses exactly what was not fsynced (a real FUSE mount, real SQLite).

Every expectation is what the test itself wrote and synced (or what a child process reported it
committed), never the file system's own account. Skipped, with the reason, where /dev/fuse,
fusermount3, libfuse3 or mfusepy is missing. Nothing is mocked.
"""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.powercut import PowerCutFS, fuse_missing

pytestmark = pytest.mark.skipif(fuse_missing() is not None, reason=f"no FUSE mount here: {fuse_missing()}")


@pytest.fixture
def fs(tmp_path: Path) -> Iterator[PowerCutFS]:
    with PowerCutFS(tmp_path / "disk", tmp_path / "mnt") as mounted:
        yield mounted


def write(path: Path, data: bytes, *, sync: bool, mode: str = "wb") -> None:
    with open(path, mode) as f:
        f.write(data)
        f.flush()
        if sync:
            os.fsync(f.fileno())


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def test_synced_writes_survive_and_unsynced_writes_are_gone(fs: PowerCutFS) -> None:
    m = fs.mount_dir
    write(m / "log", b"kept", sync=True)
    fsync_dir(m)
    write(m / "log", b" lost", sync=False, mode="ab")
    assert (m / "log").read_bytes() == b"kept lost"  # reads see the volatile layer
    fs.cut()
    assert (m / "log").read_bytes() == b"kept"
    assert (fs.disk / "log").read_bytes() == b"kept"
    assert fs.stats()["cuts"] == 1
    assert fs.stats()["bytes_discarded"] == len(b" lost")


def test_fdatasync_counts_as_a_sync(fs: PowerCutFS) -> None:
    m = fs.mount_dir
    with open(m / "f", "wb") as f:
        f.write(b"data")
        f.flush()
        os.fdatasync(f.fileno())
    fsync_dir(m)
    fs.cut()
    assert (m / "f").read_bytes() == b"data"


def test_a_create_without_a_directory_fsync_is_gone(fs: PowerCutFS) -> None:
    m = fs.mount_dir
    write(m / "synced-file-unsynced-entry", b"x" * 100, sync=True)
    (m / "sub").mkdir()
    fs.cut()
    assert sorted(os.listdir(m)) == []


def test_a_rename_without_a_directory_fsync_reverts(fs: PowerCutFS) -> None:
    m = fs.mount_dir
    write(m / "state", b"old", sync=True)
    write(m / "state.new", b"new", sync=True)
    fsync_dir(m)
    os.rename(m / "state.new", m / "state")
    assert (m / "state").read_bytes() == b"new"
    fs.cut()
    assert (m / "state").read_bytes() == b"old"
    assert (m / "state.new").read_bytes() == b"new"
    os.rename(m / "state.new", m / "state")
    fsync_dir(m)
    fs.cut()
    assert sorted(os.listdir(m)) == ["state"]
    assert (m / "state").read_bytes() == b"new"


def test_an_unlink_without_a_directory_fsync_reverts(fs: PowerCutFS) -> None:
    m = fs.mount_dir
    (m / "d").mkdir()
    fsync_dir(m)
    write(m / "d" / "f", b"f", sync=True)
    fsync_dir(m / "d")
    (m / "d" / "f").unlink()
    fs.cut()
    assert (m / "d" / "f").read_bytes() == b"f"


def test_torn_writes_keep_a_sector_aligned_prefix(fs: PowerCutFS) -> None:
    m = fs.mount_dir
    write(m / "blob", b"", sync=True)
    fsync_dir(m)
    expected = bytearray()
    lengths = []
    for seed in range(4):
        chunks = [bytes([seed * 16 + i]) * 4096 for i in range(8)]
        with open(m / "blob", "ab") as f:
            for chunk in chunks:
                f.write(chunk)
                f.flush()  # one write(2) each
        expected += b"".join(chunks)
        fs.cut(keep_prefix_rng=random.Random(seed))
        got = (m / "blob").read_bytes()
        assert got == bytes(expected[: len(got)]), "not a prefix of what was written"
        assert len(got) % 512 == 0
        lengths.append(len(got))
        del expected[len(got) :]
    full = [(i + 1) * 8 * 4096 for i in range(4)]
    assert any(0 < n - (full[i] - 8 * 4096) < 8 * 4096 for i, n in enumerate(lengths)), lengths


def test_cut_kills_the_processes_using_the_mount(fs: PowerCutFS) -> None:
    m = fs.mount_dir
    hold = "import sys,time; f=open(sys.argv[1],'w'); print('ready',flush=True); time.sleep(600)"
    holder = subprocess.Popen(
        [sys.executable, "-c", hold, str(m / "held")],
        stdout=subprocess.PIPE,
        text=True,
    )
    inside = subprocess.Popen(
        [sys.executable, "-c", "print('ready', flush=True); import time; time.sleep(600)"],
        cwd=m,
        stdout=subprocess.PIPE,
        text=True,
    )
    outside = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        assert holder.stdout is not None and inside.stdout is not None
        assert holder.stdout.readline() == "ready\n"
        assert inside.stdout.readline() == "ready\n"
        killed = fs.cut()
        assert sorted(killed) == sorted([holder.pid, inside.pid])
        assert holder.wait(30) == -9
        assert inside.wait(30) == -9
        assert outside.poll() is None
    finally:
        for p in (holder, inside, outside):
            reap(p)


def reap(child: subprocess.Popen[Any]) -> None:
    child.kill()
    child.wait()
    if child.stdout is not None:
        child.stdout.close()


SQLITE_WRITER = textwrap.dedent(
    """
    import sqlite3, sys
    db = sqlite3.connect(sys.argv[1], isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, body BLOB)")
    reader = sqlite3.connect(sys.argv[1])  # a second connection: the -shm index is shared via mmap
    start = int(sys.argv[2])
    synchronous = sys.argv[3]
    for i in range(start, start + int(sys.argv[4])):
        if i == start + int(sys.argv[5]):
            db.execute(f"PRAGMA synchronous={synchronous}")
            print("switched", flush=True)
        db.execute("INSERT INTO t VALUES (?, ?)", (i, bytes(700)))
        assert reader.execute("SELECT max(id) FROM t").fetchone()[0] == i
        print(i, flush=True)
    print("done", flush=True)
    import time; time.sleep(600)
    """
)


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for child in started:
        reap(child)


def run_writer(
    children: list[subprocess.Popen[str]],
    db: Path,
    start: int,
    rows: int,
    *,
    synchronous: str = "FULL",
    switch_at: int = 0,
) -> list[int]:
    """A child commits rows ``start..`` and reports each after its commit; it is left running."""
    child = subprocess.Popen(
        [sys.executable, "-c", SQLITE_WRITER, str(db), str(start), synchronous, str(rows), str(switch_at)],
        stdout=subprocess.PIPE,
        text=True,
    )
    children.append(child)
    assert child.stdout is not None
    committed = [int(line) for line in iter(child.stdout.readline, "done\n") if line.strip().isdigit()]
    assert len(committed) == rows, f"writer stopped early (exit {child.poll()})"
    return committed


def rows_and_integrity(db: Path) -> tuple[list[int], str]:
    conn = sqlite3.connect(db)
    try:
        ids = [row[0] for row in conn.execute("SELECT id FROM t ORDER BY id")]
        return ids, conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


def test_wal_commits_with_synchronous_full_survive_cuts(fs: PowerCutFS, children: list[subprocess.Popen[str]]) -> None:
    db = fs.mount_dir / "agent.sqlite"
    committed: list[int] = []
    for cut in range(3):
        committed += run_writer(children, db, 1000 * cut, 60)
        assert fs.cut(keep_prefix_rng=random.Random(cut))  # the writer, still holding the db, is killed
        ids, integrity = rows_and_integrity(db)
        assert integrity == "ok"
        assert ids == committed
    assert fs.stats()["cuts"] == 3


def test_wal_commits_with_synchronous_off_are_lost_but_the_database_stays_whole(
    fs: PowerCutFS, children: list[subprocess.Popen[str]]
) -> None:
    db = fs.mount_dir / "agent.sqlite"
    committed = run_writer(children, db, 0, 80, synchronous="OFF", switch_at=30)
    fs.cut()
    ids, integrity = rows_and_integrity(db)
    assert integrity == "ok"
    # the 30 rows committed under FULL were fsynced; nothing after the switch to OFF was
    assert ids == committed[:30]


STORE_FLOOD = textwrap.dedent(
    """
    import asyncio, os, sys
    from edge_agent.store.db import Store

    async def main():
        store = Store(sys.argv[1])
        wal = sys.argv[1] + "-wal"
        rows = int(sys.argv[2])
        size = rewinds = 0  # the WAL file is cut back to its limit when it is rewound
        for _ in range(1000):  # the agent under a flood: batch, COMMIT, next batch at once
            store.begin_batch()
            for _ in range(100):
                with store.transaction():
                    store.inbox.first_time("lamp-1", rows, 0.0)
                    store.outbox.enqueue("north", "t", bytes(300), priority=0, now=0.0, msg_id=f"id-{rows}")
                rows += 1
            store.commit_batch()
            rewinds, size = rewinds + (os.stat(wal).st_size < size), os.stat(wal).st_size
            future = store.synced()
            if future is not None:  # reported only once the fsync that covers it returned
                future.add_done_callback(lambda f, n=rows, r=rewinds: print(n, r, flush=True))
            await asyncio.sleep(0)
        await store.sync()

    asyncio.run(main())
    """
)


def test_store_commits_reported_synced_survive_a_cut_across_wal_restarts(
    fs: PowerCutFS, children: list[subprocess.Popen[str]]
) -> None:
    """The group-commit promise across WAL restarts: a flood of batches rewinds the WAL many
    times (a restart overwrites frames from offset 0, the syncer's next fsync then covers only the
    new ones); every row a sync() reported durable before the power cut is there after it."""
    db = fs.mount_dir / "gw.sqlite3"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    reported = 0
    for cut in range(2):
        child = subprocess.Popen(
            [sys.executable, "-c", STORE_FLOOD, str(db), str(reported)], stdout=subprocess.PIPE, text=True, env=env
        )
        children.append(child)
        assert child.stdout is not None
        rewinds = 0
        while rewinds < 3:  # the WAL was rewound three times, then the power is cut
            line = child.stdout.readline()
            assert line, f"the child ended (exit {child.wait()}) and the WAL was rewound {rewinds} times"
            synced, rewinds = map(int, line.split())
            reported = max(reported, synced)
        fs.cut(keep_prefix_rng=random.Random(cut))
        for line in child.stdout:  # whatever the child printed before it died was synced too
            reported = max(reported, int(line.split()[0]))
        conn = sqlite3.connect(db)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            ids = {row[0] for row in conn.execute("SELECT seq FROM inbox")}
        finally:
            conn.close()
        missing = set(range(reported)) - ids
        assert not missing, f"cut {cut}: {len(missing)} rows reported synced are gone (first {min(missing)})"
        reported = max(ids) + 1  # the next child goes on after what survived
