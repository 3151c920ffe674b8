"""The store's one SQLite connection: its transactions, batches and durability.

Owns: opening the database (WAL mode, ``synchronous``), ``transaction()`` (one atomic commit),
batches (many transactions, one COMMIT), counting commits for the WAL's group commit and
checkpoints, ``sync()``, and closing. Every part of the store (edge_agent/store/db.py) writes
through this one connection, inside the one open transaction. Must not import: engine,
transports, agent.

Durability is "commit, then ``await store.sync()``"
----------------------------------------------------
The database runs in WAL mode with ``synchronous=NORMAL``: a COMMIT appends the transaction's
frames to ``<db>-wal`` in the OS page cache and returns without an fsync, so no commit waits for
the disk on the event loop. A process crash (even SIGKILL) loses nothing that was committed, the
page cache survives it; a power cut can lose commits that no fsync covered yet. Whoever is about
to promise something to the outside world (an MQTT acknowledgement, a dongle ACK) awaits
:meth:`Transactions.sync`, which returns once every commit made before the call is on disk. A
thread of its own fsyncs the ``-wal`` file (see :mod:`edge_agent.store.walsync`) and one fsync
covers every commit made before it started (group commit): every caller that committed while an
fsync was running shares the next one (the benchmark in tests/test_store_durability.py: 1,000
interleaved tasks making 5,000 commits took 140-360 fsyncs). ``transaction(durable=True)`` still
says what the caller wants, but no longer fsyncs inline: it starts a background fsync right
after its commit (so an alert committed by a timer, which nobody acknowledges, is on disk a few
ms later) without waiting for it.

Checkpoints. Commits never checkpoint (``wal_autocheckpoint=0``); a background thread runs
``wal_checkpoint(PASSIVE)`` every 256 commits on its own connection. That alone never rewinds the
WAL under a sustained flood: SQLite restarts the WAL only at a BEGIN that finds every frame
copied back, and a writer that begins its next batch as soon as it committed the last one has
always appended frames since the other connection's checkpoint started (the WAL grew by some
30 MB a second for as long as a QoS 1 flood lasted). So once ``-wal`` passes
``Checkpointer.RESTART_BYTES`` (8 MiB) after a commit, the thread checkpoints at once, and after
the store's next commit, before its next BEGIN, the store's own connection copies the few frames
committed meanwhile (a PASSIVE checkpoint: a few ms on the event loop, its two fsyncs included,
once per 8 MiB written); its next transaction then rewinds the WAL, and ``journal_size_limit``
cuts the file back to 8 MiB. A reader holding an old snapshot only postpones this to the next
round.

In WAL mode NORMAL differs from FULL only in whether a *commit* syncs the WAL. The SQLite docs
(PRAGMA synchronous): with NORMAL in WAL mode "the WAL file is synchronized before each
checkpoint and the database file is synchronized after each completed checkpoint and the WAL
file header is synchronized when a WAL file begins to be reused after a checkpoint, but no sync
operations occur during most transactions" (strace on 3.40 agrees: fdatasync of -wal then of the
database on the checkpointing thread, none on a commit). So the WAL is restarted (overwritten
from offset 0) only once its frames are durable in the database, and our fsync of the WAL never
needs the database file: a commit's frames are either still in the WAL it fsyncs, or already
synced into the database by a checkpoint. This holds for the restarts the store's connection
asks for too: the checkpoint it runs is an ordinary one (WAL fsynced, frames copied, database
fsynced, and only then counted as copied back), so a commit whose frames a restart overwrites
before the syncer's next fsync is already durable in the database, and a waiter released by that
fsync is owed nothing more; no extra fsync of the old frames is needed. Besides that tail
checkpoint, the one sync SQLite does on the event loop is the header sync: the first commit
after a WAL restart writes a new header and syncs it (one small fsync per restart, of a file
whose other pages the checkpoint already flushed).

WAL identity. While a connection stays open, SQLite restarts the WAL in the same file (same
inode; TRUNCATE and ``journal_size_limit`` only shorten it). The syncer still checks the inode
before every fsync and re-opens ``-wal`` if it was replaced (the last connection closed it, or
the journal mode changed). ``:memory:`` databases have nothing to sync: ``sync()`` returns at
once. If WAL mode cannot be had (a filesystem without shared memory), the store falls back to
``synchronous=FULL`` and ``sync()`` returns at once: every commit is then synced inline, as it
used to be.

In-memory totals (:class:`TxTotal`, the outbox's queued bytes) follow the transactions: a change
made inside one counts once it commits; a ROLLBACK, or a failed savepoint's, drops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from edge_agent.store.walsync import Checkpointer, WalSyncer


class TxTotal:
    """A running total kept in memory beside the database: changed by statements that
    succeeded, counted at COMMIT if made inside a transaction (a ROLLBACK drops the change),
    else at once (the statement committed by itself)."""

    __slots__ = ("_tx", "committed", "pending")

    def __init__(self, tx: Transactions, value: int) -> None:
        self._tx = tx
        self.committed = value
        self.pending = 0  # the change made by the open transaction

    def add(self, delta: int) -> None:
        if self._tx.in_tx:
            self.pending += delta
        else:
            self.committed += delta

    @property
    def value(self) -> int:
        """The total, including the open transaction's changes."""
        return self.committed + (self.pending if self._tx.in_tx else 0)


class Transactions:
    """One SQLite connection. Not thread-safe: used from the agent's event loop (only the WAL
    fsync and the checkpoints run on threads of their own).

    Durable means committed *and* ``await sync()`` returned (see the module docstring).
    ``prepare`` creates the schema, after the journal mode is set and before any transaction.
    """

    def __init__(self, path: Path | str, prepare: Callable[[sqlite3.Connection], None]) -> None:
        self.path = Path(path)
        memory = str(path) == ":memory:"
        if not memory:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # a lock held longer is another process's fault: an error and an alarm, not a 5 s freeze
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=0.25)
        mode = str(self.db.execute("PRAGMA journal_mode=WAL").fetchone()[0]).lower()
        self.wal = mode == "wal"
        # NORMAL in WAL mode: commits do not fsync, checkpoints do; sync() makes commits durable.
        # Without WAL (memory, or a filesystem that cannot share memory) FULL: inline, as before.
        self.db.execute(f"PRAGMA synchronous={'NORMAL' if self.wal else 'FULL'}")
        prepare(self.db)
        self.in_tx = False
        self._totals: list[TxTotal] = []
        self._batch: bool | None = None  # an open batch: None, or whether a transaction in it was durable
        self._changes_seen = self.db.total_changes
        self._checkpointer: Checkpointer | None = None
        self._syncer: WalSyncer | None = None
        self._wal_path: Path | None = None

    def start_syncing(self) -> None:
        """Start the fsync and checkpoint threads: the last step of opening the store, once its
        parts have read what they need (the first fsync covers everything done at open)."""
        if self.wal and self._syncer is None:
            # Checkpoints (copying the WAL into the database, with fsync) run on a thread of
            # their own, so they never stall the event loop: inline auto-checkpoints added
            # 10-20 ms to every thousandth message.
            self.db.execute("PRAGMA wal_autocheckpoint=0")
            # a WAL that grew past the limit while a restart was held off is cut back to it
            self.db.execute(f"PRAGMA journal_size_limit={Checkpointer.RESTART_BYTES}")
            self._checkpointer = Checkpointer(self.path)
            # SQLite names the WAL after the full path of the database, symlinks resolved
            self._wal_path = Path(os.path.realpath(self.path) + "-wal")
            self._syncer = WalSyncer(self._wal_path)

    def total(self, value: int) -> TxTotal:
        """A running total that follows this connection's transactions, starting at ``value``."""
        total = TxTotal(self, value)
        self._totals.append(total)
        return total

    def close(self) -> None:
        """A last fsync of the WAL, a TRUNCATE checkpoint (which syncs the database), closed."""
        if self._syncer is not None:
            self._syncer.stop()
        if self._checkpointer is not None:
            self._checkpointer.stop()
        with contextlib.suppress(sqlite3.Error):
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.db.close()

    @contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One atomic commit (``BEGIN IMMEDIATE`` ... ``COMMIT``; ROLLBACK if the body raises).

        No commit fsyncs on the event loop. ``durable=True`` (alerts, acknowledged work) starts
        a background fsync as soon as the commit is done, without waiting for it; ``False``
        (telemetry, counters) leaves the commit to the next fsync anyone asks for or to the
        next checkpoint. A caller that needs the commit on disk before it goes on (before an
        acknowledgement) awaits :meth:`sync` after the ``with`` block.
        """
        if self._batch is not None:  # inside a batch: a savepoint, committed with the batch
            yield from self._savepoint(durable)
            return
        self.db.execute("BEGIN IMMEDIATE")
        self.in_tx = True
        self._reset_totals()
        committed = False
        try:
            yield self.db
            self.db.execute("COMMIT")
            committed = True
        finally:
            self._end(committed, durable)

    def _end(self, committed: bool, durable: bool) -> None:
        self.in_tx = False
        if committed:
            for total in self._totals:
                total.committed += total.pending
            self._note_commits(sync_soon=durable)
        elif self.db.in_transaction:  # a failed COMMIT may have rolled back already
            self.db.execute("ROLLBACK")
        self._reset_totals()

    def _reset_totals(self) -> None:
        for total in self._totals:
            total.pending = 0

    # ----- batches: many transactions, one COMMIT ----------------------------------------
    # An inbound batch (messages a link read at once) is one SQLite transaction: each message's
    # ``transaction`` block is a SAVEPOINT (a failing one rolls back alone) and one COMMIT ends
    # the batch. The caller must not yield to the event loop while a batch is open (no other
    # task may write in it): it opens one, handles messages synchronously, then commits.
    def begin_batch(self) -> None:
        """Open a batch (``BEGIN IMMEDIATE``); sqlite3.Error if the store cannot be written."""
        if self._batch is None:
            self.db.execute("BEGIN IMMEDIATE")
            self.in_tx, self._batch = True, False
            self._reset_totals()

    @property
    def in_batch(self) -> bool:
        return self._batch is not None

    def commit_batch(self) -> bool:
        """COMMIT the open batch (ROLLBACK and raise if that fails); True when a transaction in
        it was durable (the caller awaits :meth:`sync` before acknowledging)."""
        if self._batch is None:
            return False
        durable, committed = self._batch, False
        try:
            self.db.execute("COMMIT")
            committed = True
        finally:
            self._batch = None
            self._end(committed, durable)
        return durable

    def _savepoint(self, durable: bool) -> Iterator[sqlite3.Connection]:
        self.db.execute("SAVEPOINT tx")
        marks = [total.pending for total in self._totals]
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK TO tx")
            self.db.execute("RELEASE tx")
            for total, mark in zip(self._totals, marks, strict=True):
                total.pending = mark
            raise
        self.db.execute("RELEASE tx")
        self._batch = bool(self._batch) or durable

    def _note_commits(self, *, sync_soon: bool = False) -> None:
        """Count a commit if anything was written since the last one counted (this also
        catches statements run outside a transaction, each of which commits by itself)."""
        changes = self.db.total_changes
        if changes == self._changes_seen:
            return  # a read-only transaction: nothing to sync
        self._changes_seen = changes
        if self._syncer is not None:
            self._syncer.note_commit(sync_soon=sync_soon)
        if self._checkpointer is not None:
            self._checkpointer.commits += 1
            self._keep_wal_bounded(self._checkpointer)

    def _keep_wal_bounded(self, checkpointer: Checkpointer) -> None:
        """After a commit, before the next BEGIN: the store's part in restarting a large WAL
        (see :class:`Checkpointer`)."""
        if checkpointer.tail_wanted:
            checkpointer.checkpoint_tail(self.db)
            return
        assert self._wal_path is not None
        try:
            size = os.stat(self._wal_path).st_size
        except FileNotFoundError:
            return
        if size > checkpointer.RESTART_BYTES:
            checkpointer.wal_grew()

    async def sync(self) -> None:
        """Return once everything committed before the call is on disk.

        Callers await this before they say "got it" (an MQTT acknowledgement, a dongle ACK),
        after their transaction's ``with`` block. Returns at once if nothing was committed since
        the last fsync (and for ``:memory:``). Never blocks the event loop: a thread fsyncs the
        WAL and one fsync serves every caller whose commit came before it started. Raises
        ``sqlite3.OperationalError`` if an fsync failed (then and from then on: see walsync).
        """
        future = self.synced()
        if future is not None:
            await future

    def synced(self) -> asyncio.Future[None] | None:
        """What :meth:`sync` awaits, taken now: a future done once every commit made so far is
        on disk (its exception if an fsync failed), or None if they are already."""
        if self.db.in_transaction:
            raise RuntimeError("Store.sync() inside an open transaction: commit first, then sync")
        if self._syncer is None:
            return None
        self._note_commits()
        return self._syncer.wait(asyncio.get_running_loop())

    def sync_stats(self) -> dict[str, int]:
        """``committed`` (commits counted), ``synced`` (on disk up to), ``fsyncs`` (WAL fsyncs)."""
        if self._syncer is None:
            return {"committed": 0, "synced": 0, "fsyncs": 0}
        return self._syncer.stats()

    def integrity_ok(self) -> bool:
        return bool(self.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok")
