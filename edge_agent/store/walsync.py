"""Group commit for a WAL-mode SQLite database: one thread fsyncs the ``-wal`` file for everyone.

The store's connection commits with ``synchronous=NORMAL``: a COMMIT appends its frames to the
WAL in the OS page cache and returns without an fsync. :class:`WalSyncer` makes those commits
durable off the event loop. The store numbers its commits (:meth:`WalSyncer.note_commit`); a
caller that must not say "got it" before its commit is on disk awaits :meth:`WalSyncer.wait`
with the number of the last commit it saw. The thread records the highest commit number when an
fsync *starts*, and when that fsync returns it releases, together, every waiter whose number is
at or below the recorded one. Waiters that arrive while an fsync runs wait for the next one:
their commit may have been written after the running fsync began.

Futures are resolved with ``loop.call_soon_threadsafe``; nobody polls. An fsync failure is
sticky (after a failed fsync Linux may drop the dirty pages and report later fsyncs as
successful, so nothing after it can be promised): every waiter then and later gets
``sqlite3.OperationalError`` ("disk I/O error", as SQLite itself reports a failed fsync), and a
restart of the process is the recovery.

:class:`Checkpointer` copies the WAL back into the database on a thread of its own and, with
the store's help between two of its transactions, keeps the WAL from growing without end under
a flood that never pauses. Must not import: engine, transports, agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger(__name__)

THREAD_NAME = "sqlite-sync"


def fsync_directory(directory: Path) -> None:
    """Make the directory entries (a newly created database or ``-wal`` file) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class WalFile:
    """An fd of a database's ``-wal`` file, opened once and re-opened only if the file was replaced.

    While any connection keeps the database open, SQLite restarts the WAL after a checkpoint by
    writing a new header at offset 0 of the same file (``wal_checkpoint(TRUNCATE)`` and
    ``journal_size_limit`` truncate it, still the same inode); tests/test_store_durability.py
    checks this. The WAL is deleted and later created anew only when the last connection closes
    or the journal mode changes, so :meth:`fsync` compares the inode of the path with the inode of
    its fd each time and re-opens on a mismatch (an open fd pins its inode, so the number cannot
    be reused meanwhile). If there is no ``-wal`` file at all, every commit has been checkpointed
    into the database by SQLite, which syncs the database file when it does that: there is
    nothing to fsync.

    Only ``-wal`` is ever opened here, never the database file: closing any fd of a file drops
    every POSIX lock the process holds on it, and SQLite locks the database file, not the WAL.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None
        self.opens = 0

    def _open(self) -> bool:
        self.close()
        try:
            self.fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        self.opens += 1
        # once at start (the database's and the WAL's directory entries), and again for a new WAL
        fsync_directory(self.path.parent)
        return True

    def fsync(self) -> bool:
        """fsync the current ``-wal`` file; False if there is none (nothing left to sync)."""
        try:
            on_disk = os.stat(self.path)
        except FileNotFoundError:
            self.close()
            return False
        if self.fd is None:
            if not self._open():
                return False
        else:
            mine = os.fstat(self.fd)
            if (mine.st_ino, mine.st_dev) != (on_disk.st_ino, on_disk.st_dev) or mine.st_nlink == 0:
                log.info("%s was replaced: re-opening it", self.path)
                if not self._open():
                    return False
        assert self.fd is not None
        os.fsync(self.fd)
        return True

    def close(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():  # the waiting task was cancelled
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


class WalSyncer:
    """The syncer thread. ``note_commit`` and ``wait`` are called from the store's thread."""

    def __init__(self, wal_path: Path) -> None:
        self._wal = WalFile(wal_path)
        self._cond = threading.Condition()
        # Commit numbers. The database may hold commits made before it was opened (by an earlier
        # process, or the schema just created) that nobody has fsynced: they count as commit 1,
        # so the first fsync happens at once and a sync() right after opening waits for it.
        self._committed = 1  # the last commit the store made
        self._wanted = 1  # the highest commit number someone asked to have on disk
        self._synced = 0  # every commit up to this number is on disk
        self._waiters: list[tuple[int, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._error: sqlite3.OperationalError | None = None
        self._stopping = False
        self.fsyncs = 0  # completed fsync rounds of the WAL
        self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
        self._thread.start()

    # ----- the store's side ---------------------------------------------------------------
    def note_commit(self, *, sync_soon: bool) -> int:
        """Count one commit (after its COMMIT returned); ``sync_soon`` starts an fsync for it
        without anyone waiting (a durable transaction). Returns the commit's number."""
        with self._cond:
            self._committed += 1
            if sync_soon and self._committed > self._wanted:
                self._wanted = self._committed
                self._cond.notify()
            return self._committed

    def wait(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None] | None:
        """A future resolved once every commit counted so far is on disk; None if already so."""
        with self._cond:
            if self._error is not None:
                raise self._new_error()
            target = self._committed
            if target <= self._synced:
                return None
            future: asyncio.Future[None] = loop.create_future()
            self._waiters.append((target, loop, future))
            if target > self._wanted:
                self._wanted = target
                self._cond.notify()
            return future

    def stats(self) -> dict[str, int]:
        with self._cond:
            return {"committed": self._committed, "synced": self._synced, "fsyncs": self.fsyncs}

    def stop(self, timeout: float = 10.0) -> None:
        """A last fsync of everything committed, then the thread ends; waiters are released."""
        with self._cond:
            self._wanted = max(self._wanted, self._committed)
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("the WAL syncer did not stop within %.0f s", timeout)
            return
        self._wal.close()

    @property
    def failed(self) -> bool:
        return self._error is not None

    def _new_error(self) -> sqlite3.OperationalError:
        """A fresh exception for each waiter (one shared object would collect every traceback)."""
        assert self._error is not None
        error = sqlite3.OperationalError(*self._error.args)
        error.__cause__ = self._error.__cause__
        return error

    # ----- the thread ---------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and (self._error is not None or self._wanted <= self._synced):
                    self._cond.wait()
                if self._error is not None or self._wanted <= self._synced:
                    return  # stopping, and nothing (more) to do
                start = self._committed  # this fsync covers every commit up to here
            try:
                self._wal.fsync()
            except Exception as exc:
                self._fail(exc)
                continue
            with self._cond:
                self.fsyncs += 1
                self._synced = max(self._synced, start)
                ready = [w for w in self._waiters if w[0] <= self._synced]
                if ready:
                    self._waiters = [w for w in self._waiters if w[0] > self._synced]
            self._release(ready)

    def _fail(self, exc: BaseException) -> None:
        log.critical("fsync of %s failed: %s; nothing more can be promised durable", self._wal.path, exc)
        error = sqlite3.OperationalError(f"disk I/O error: fsync of {self._wal.path} failed: {exc}")
        error.__cause__ = exc
        with self._cond:
            self._error = error
            ready, self._waiters = self._waiters, []
        self._release(ready, failed=True)

    def _release(
        self, ready: list[tuple[int, asyncio.AbstractEventLoop, asyncio.Future[None]]], *, failed: bool = False
    ) -> None:
        for _, loop, future in ready:
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody is waiting
                loop.call_soon_threadsafe(_settle, future, self._new_error() if failed else None)


class Checkpointer:
    """A background thread with its own connection running passive WAL checkpoints once
    enough has been written (an idle gateway never checkpoints, so it never fsyncs for it).
    Its connection is ``synchronous=NORMAL`` like the store's: checkpoints sync the WAL and the
    database file in NORMAL as in FULL (see the module docstring).

    Keeping the WAL bounded under a flood takes the writer's help. SQLite restarts the WAL (the
    next transaction writes from offset 0) only if, when the writer *begins* a transaction,
    every frame is already copied back (nBackfill == mxFrame) and no reader holds an older
    snapshot. A writer that commits a batch and begins the next one at once has always appended
    frames since a checkpoint on another connection started, so PASSIVE checkpoints here finish
    (each copies all it saw) yet never leave the WAL fully copied at a BEGIN: the WAL grew by
    tens of MB a second and was never rewound. So once the store sees ``-wal`` grow past
    :attr:`RESTART_BYTES` (:meth:`wal_grew`), this thread runs a checkpoint at once (the bulk of
    the copying, off the event loop) and then sets :attr:`tail_wanted`; the store's connection,
    after its next commit and before its next BEGIN, copies the few frames committed meanwhile
    (:meth:`checkpoint_tail`), so its next transaction restarts the WAL. Until the store has done
    that, this thread starts no checkpoint (the two never contend for the checkpoint lock).
    """

    EVERY_COMMITS = 256
    #: a ``-wal`` larger than this is rewound as soon as the writer lets it (also SQLite's
    #: ``journal_size_limit``: what the file is cut back to after a restart)
    RESTART_BYTES = 8 << 20
    TAIL_FRAMES = 64  # a catch-up round that found at most this many new frames is the last
    CATCH_UP_ROUNDS = 4

    def __init__(self, path: Path, interval: float = 0.25) -> None:
        self._path = path
        self._interval = interval
        self.commits = 0  # incremented by the store's connection after each commit
        self.tail_wanted = False  # set here, cleared by the store's connection (checkpoint_tail)
        self._grew = False  # the store saw the WAL grow past RESTART_BYTES
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        self._thread.start()

    # ----- the store's side (its thread) --------------------------------------------------
    def wal_grew(self) -> None:
        """The store saw ``-wal`` larger than :attr:`RESTART_BYTES`: checkpoint now."""
        if not self._grew and not self.tail_wanted:
            self._grew = True
            self._wake.set()

    def checkpoint_tail(self, db: sqlite3.Connection) -> None:
        """On the store's connection, between a COMMIT and the next BEGIN: copy what was
        committed since this thread's checkpoint, so that the next transaction restarts the WAL.
        PASSIVE never waits for anyone; if a reader still holds an old snapshot, the WAL is not
        restarted this time and the next growth past the limit tries again."""
        self.tail_wanted = False
        with contextlib.suppress(sqlite3.Error):
            db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        self._wake.set()

    # ----- the thread ---------------------------------------------------------------------
    def _run(self) -> None:
        db = sqlite3.connect(str(self._path), isolation_level=None)
        try:
            db.execute("PRAGMA synchronous=NORMAL")
            while not self._stop.is_set():
                self._wake.wait(self._interval)
                self._wake.clear()
                if self._stop.is_set() or self.tail_wanted:
                    continue  # the store has not copied the tail yet: no checkpoint meanwhile
                grew, self._grew = self._grew, False
                if not grew and self.commits < self.EVERY_COMMITS:
                    continue
                self.commits = 0
                caught_up = False
                with contextlib.suppress(sqlite3.Error):  # busy: try again next time
                    caught_up = self._checkpoint(db, catch_up=grew)
                # the store copies the tail only after a checkpoint here copied the bulk (if
                # another connection held the checkpoint lock, its next commit asks again)
                self.tail_wanted = grew and caught_up

        finally:
            db.close()

    def _checkpoint(self, db: sqlite3.Connection, *, catch_up: bool) -> bool:
        """One passive checkpoint; ``catch_up``: again while the writer appended more than
        :attr:`TAIL_FRAMES` during the last one, so that the store's tail is short. False if
        the checkpoint lock was busy (another connection checkpointing)."""
        seen = 0
        for _ in range(self.CATCH_UP_ROUNDS if catch_up else 1):
            busy, frames, _ = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if busy:
                return seen > 0
            if frames - seen <= self.TAIL_FRAMES:
                break
            seen = frames
        return True

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(5)
