"""The gateway's SQLite state: outbox, timers, alerts, traces, shadow, counters, inbox,
dead letters and a small key/value table.

Owns: the schema and every statement against it. Every outbox message gets the agent's own id
before it is stored; MQTT packet ids are never used for identity. Must not import: engine,
transports, agent.

Durability is "commit, then ``await store.sync()``"
----------------------------------------------------
The database runs in WAL mode with ``synchronous=NORMAL``: a COMMIT appends the transaction's
frames to ``<db>-wal`` in the OS page cache and returns without an fsync, so no commit waits for
the disk on the event loop. A process crash (even SIGKILL) loses nothing that was committed, the
page cache survives it; a power cut can lose commits that no fsync covered yet. Whoever is about
to promise something to the outside world (an MQTT acknowledgement, a dongle ACK) awaits
:meth:`Store.sync`, which returns once every commit made before the call is on disk. A thread of
its own fsyncs the ``-wal`` file (see :mod:`edge_agent.store.walsync`) and one fsync covers
every commit made before it started (group commit): every caller that committed while an fsync
was running shares the next one (the benchmark in tests/test_store_durability.py: 1,000
interleaved tasks making 5,000 commits took 140-360 fsyncs). ``transaction(durable=True)`` still
says what the caller wants, but no longer fsyncs inline: it starts a background fsync right
after its commit (so an alert committed by a timer, which nobody acknowledges, is on disk a few
ms later) without waiting for it.

Checkpoints. Commits never checkpoint (``wal_autocheckpoint=0``); a background thread runs
``wal_checkpoint(PASSIVE)`` every 256 commits on its own connection. In WAL mode NORMAL differs
from FULL only in whether a *commit* syncs the WAL. The SQLite docs (PRAGMA synchronous): with
NORMAL in WAL mode "the WAL file is synchronized before each checkpoint and the database file is
synchronized after each completed checkpoint and the WAL file header is synchronized when a WAL
file begins to be reused after a checkpoint, but no sync operations occur during most
transactions" (strace on 3.40 agrees: fdatasync of -wal then of the database on the
checkpointing thread, none on a commit). So the WAL is restarted (overwritten from offset 0)
only once its frames are durable in the database, and our fsync of the WAL never needs the
database file: a commit's frames are either still in the WAL it fsyncs, or already synced into
the database by a checkpoint. The one sync SQLite still does on the event loop is that header
sync: the first commit after a WAL restart writes a new header and syncs it (one small fsync per
checkpoint cycle, of a file whose other pages the checkpoint already flushed).

WAL identity. While a connection stays open, SQLite restarts the WAL in the same file (same
inode; TRUNCATE only shortens it). The syncer still checks the inode before every fsync and
re-opens ``-wal`` if it was replaced (the last connection closed it, or the journal mode
changed). ``:memory:`` databases have nothing to sync: ``sync()`` returns at once. If WAL mode
cannot be had (a filesystem without shared memory), the store falls back to ``synchronous=FULL``
and ``sync()`` returns at once: every commit is then synced inline, as it used to be.

Outbox quota: a running total of the queued payload bytes is kept in memory (one
``SUM(LENGTH(payload))`` at open, then +/- on every enqueue, delivery and eviction, applied only
when the transaction commits). Each enqueue that leaves the total above ``quota_bytes`` evicts
the oldest telemetry (counted as ``outbox.evicted``); alerts and events are never evicted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.store.schema import SCHEMA
from edge_agent.store.walsync import Checkpointer, WalSyncer

ALERT_PRIORITY = 0
EVENT_PRIORITY = 1
TELEMETRY_PRIORITY = 2

_IN_CHUNK = 256  # ids per "seq IN (...)" statement


def new_id() -> str:
    """The agent's own message id: unique across restarts and reconnects (128 random bits,
    32 hex digits: a uuid4 without the UUID object, which cost a twentieth of an event)."""
    return os.urandom(16).hex()


def _chunks(items: list[int], size: int = _IN_CHUNK) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    seq: int
    msg_id: str
    link: str
    priority: int
    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass(frozen=True, slots=True)
class Timer:
    timer_id: str
    due: float
    kind: str
    data: dict[str, Any]


class Store:
    """One SQLite database per gateway. Not thread-safe: used from the agent's event loop
    (only the WAL fsync and the checkpoints run on threads of their own).

    Durable means committed *and* ``await store.sync()`` returned (see the module docstring).

    Outbox quota: when the queued payloads exceed ``quota_bytes``, the oldest telemetry is
    evicted (and counted as ``outbox.evicted``); alerts and events are never evicted.
    """

    DEAD_LETTERS_KEEP = 1_000  # the newest dead letters kept
    DEAD_LETTER_ERROR_CHARS = 4_000  # an error text (a traceback) is cut to this length

    def __init__(self, path: Path | str, quota_bytes: int = 64 << 20) -> None:
        self.quota_bytes = quota_bytes
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
        self._add_missing_columns()
        self.db.executescript(SCHEMA)
        self._in_tx = False
        self._tx_bytes = 0  # the change of the queued bytes by the open transaction
        self._batch: bool | None = None  # an open batch: None, or whether a transaction in it was durable
        self._changes_seen = self.db.total_changes
        self._links: set[str] = set()
        self._queued_bytes = 0
        for link, size in self.db.execute("SELECT link, SUM(LENGTH(payload)) FROM outbox GROUP BY link"):
            self._links.add(str(link))
            self._queued_bytes += int(size)
        self._checkpointer: Checkpointer | None = None
        self._syncer: WalSyncer | None = None
        if self.wal:
            # Checkpoints (copying the WAL into the database, with fsync) run on a thread of
            # their own, so they never stall the event loop: inline auto-checkpoints added
            # 10-20 ms to every thousandth message.
            self.db.execute("PRAGMA wal_autocheckpoint=0")
            self._checkpointer = Checkpointer(self.path)
            # SQLite names the WAL after the full path of the database, symlinks resolved
            self._syncer = WalSyncer(Path(os.path.realpath(self.path) + "-wal"))

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
        self._in_tx = True
        self._tx_bytes = 0
        committed = False
        try:
            yield self.db
            self.db.execute("COMMIT")
            committed = True
        finally:
            self._in_tx = False
            if committed:
                self._queued_bytes += self._tx_bytes
                self._note_commits(sync_soon=durable)
            elif self.db.in_transaction:  # a failed COMMIT may have rolled back already
                self.db.execute("ROLLBACK")
            self._tx_bytes = 0

    # ----- batches: many transactions, one COMMIT ----------------------------------------
    # An inbound batch (messages a link read at once) is one SQLite transaction: each message's
    # ``transaction`` block is a SAVEPOINT (a failing one rolls back alone) and one COMMIT ends
    # the batch. The caller must not yield to the event loop while a batch is open (no other
    # task may write in it): it opens one, handles messages synchronously, then commits.
    def begin_batch(self) -> None:
        """Open a batch (``BEGIN IMMEDIATE``); sqlite3.Error if the store cannot be written."""
        if self._batch is None:
            self.db.execute("BEGIN IMMEDIATE")
            self._in_tx, self._tx_bytes, self._batch = True, 0, False

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
            self._batch, self._in_tx = None, False
            if committed:
                self._queued_bytes += self._tx_bytes
                self._note_commits(sync_soon=durable)
            elif self.db.in_transaction:
                self.db.execute("ROLLBACK")
            self._tx_bytes = 0
        return durable

    def _savepoint(self, durable: bool) -> Iterator[sqlite3.Connection]:
        self.db.execute("SAVEPOINT tx")
        mark = self._tx_bytes
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK TO tx")
            self.db.execute("RELEASE tx")
            self._tx_bytes = mark
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
        if self._checkpointer is not None:
            self._checkpointer.commits += 1
        if self._syncer is not None:
            self._syncer.note_commit(sync_soon=sync_soon)

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

    # ----- outbox -------------------------------------------------------------------------
    def _account(self, delta: int) -> None:
        """Queued bytes changed by a statement that succeeded: counted at COMMIT if inside a
        transaction (a ROLLBACK drops the delta), else at once (the statement committed)."""
        if self._in_tx:
            self._tx_bytes += delta
        else:
            self._queued_bytes += delta

    @property
    def queued_bytes(self) -> int:
        """The running total of queued payload bytes, including the open transaction's changes:
        always equal to :meth:`outbox_bytes` without its full scan."""
        return self._queued_bytes + (self._tx_bytes if self._in_tx else 0)

    def enqueue(
        self,
        link: str,
        topic: str,
        payload: bytes,
        *,
        priority: int,
        now: float,
        qos: int = 1,
        retain: bool = False,
        msg_id: str | None = None,
    ) -> str:
        """Add a message (inside the caller's transaction if one is open). Returns its id.

        If the outbox is then over its quota, the oldest telemetry is evicted right away."""
        msg_id = msg_id or new_id()
        self.db.execute(
            "INSERT INTO outbox (msg_id, link, priority, topic, payload, qos, retain, created)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (msg_id, link, priority, topic, payload, qos, int(retain), now),
        )
        self._links.add(link)
        self._account(len(payload))
        if self.queued_bytes > self.quota_bytes:
            self.enforce_quota()
        return msg_id

    def outbox_bytes(self) -> int:
        """The queued payload bytes, counted in the database (a full scan: see queued_bytes)."""
        return int(self.db.execute("SELECT COALESCE(SUM(LENGTH(payload)), 0) FROM outbox").fetchone()[0])

    def enforce_quota(self) -> int:
        """Evict the oldest telemetry until the outbox fits its quota; returns how many.

        Decided by the running total (no scan); inside the caller's transaction if one is
        open, else in a transaction of its own."""
        if self.queued_bytes <= self.quota_bytes:
            return 0
        if not self.db.in_transaction:
            with self.transaction(durable=False):
                return self._evict()
        return self._evict()

    def _evict(self) -> int:
        evicted = 0
        while self.queued_bytes > self.quota_bytes:
            # the oldest telemetry of each link, by index (alerts and events are skipped, not
            # scanned); any of the 256 oldest overall is among the 256 oldest of its link
            oldest: list[tuple[int, int]] = []
            for link in sorted(self._links):
                oldest += self.db.execute(
                    "SELECT seq, LENGTH(payload) FROM outbox WHERE link = ? AND priority = ? ORDER BY seq LIMIT ?",
                    (link, TELEMETRY_PRIORITY, _IN_CHUNK),
                ).fetchall()
            if not oldest:
                break  # only alerts and events left: they are never evicted
            oldest.sort()
            excess = self.queued_bytes - self.quota_bytes
            drop: list[int] = []
            for seq, size in oldest[:_IN_CHUNK]:
                drop.append(seq)
                excess -= size
                if excess <= 0:
                    break
            evicted += self._delete_outbox(drop)
        if evicted:
            self.db.execute(
                "INSERT INTO counters (name, value) VALUES ('outbox.evicted', ?)"
                " ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                (evicted,),
            )
        return evicted

    def _delete_outbox(self, seqs: Iterable[int]) -> int:
        """Delete these messages, account for their bytes; returns how many were there."""
        deleted = 0
        for chunk in _chunks(list(seqs)):
            sizes = self.db.execute(
                f"DELETE FROM outbox WHERE seq IN ({','.join('?' * len(chunk))}) RETURNING LENGTH(payload)",
                chunk,
            ).fetchall()
            deleted += len(sizes)
            self._account(-sum(int(row[0]) for row in sizes))
        return deleted

    def next_seq(self, key: str) -> int:
        """The next number of a per-device sequence (inside the caller's transaction)."""
        row = self.db.execute(
            "INSERT INTO counters (name, value) VALUES (?, 1)"
            " ON CONFLICT(name) DO UPDATE SET value = value + 1 RETURNING value",
            (f"seq.{key}",),
        ).fetchone()
        return int(row[0])

    def first_time(self, device: str, seq: int, now: float) -> bool:
        """Record an inbound (device, seq); False if it was seen before (a redelivery)."""
        cursor = self.db.execute("INSERT OR IGNORE INTO inbox (device, seq, ts) VALUES (?, ?, ?)", (device, seq, now))
        return cursor.rowcount == 1

    DONGLE_WINDOW = 128

    def first_dongle_frame(self, boot: str, seq: int, now: float) -> bool:
        """Record a dongle frame (boot nonce, link seq); False if it is one of the last
        ``DONGLE_WINDOW`` recorded for that boot (a retransmission). Bounded by count: the
        dongle's seq wraps after 65536 frames, and a wrapped seq is a new frame."""
        key = f"dongle:{boot}"
        if not self.first_time(key, seq, now):
            return False
        self.db.execute(
            "DELETE FROM inbox WHERE device = ? AND rowid NOT IN"
            " (SELECT rowid FROM inbox WHERE device = ? ORDER BY rowid DESC LIMIT ?)",
            (key, key, self.DONGLE_WINDOW),
        )
        return True

    def prune_inbox(self, older_than: float) -> None:
        self.db.execute("DELETE FROM inbox WHERE ts < ?", (older_than,))

    def _add_missing_columns(self) -> None:
        """Columns added since a gateway's database was created (the outbox's refusal state)."""
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(outbox)")}
        if columns and "parked_until" not in columns:
            self.db.execute("ALTER TABLE outbox ADD COLUMN parked_until REAL NOT NULL DEFAULT 0")
            self.db.execute("ALTER TABLE outbox ADD COLUMN refused TEXT")

    def pending(self, link: str, limit: int = 100, now: float = float("inf")) -> list[OutboxMessage]:
        """Oldest first within priority: alerts before events before telemetry; messages a
        broker refused wait until their ``parked_until`` (``now``: the caller's clock)."""
        rows = self.db.execute(
            "SELECT seq, msg_id, link, priority, topic, payload, qos, retain FROM outbox"
            " WHERE link = ? AND parked_until <= ? ORDER BY priority, seq LIMIT ?",
            (link, now, limit),
        ).fetchall()
        return [OutboxMessage(r[0], r[1], r[2], r[3], r[4], bytes(r[5]), r[6], bool(r[7])) for r in rows]

    def park(self, seq: int, reason: str, until: float) -> int:
        """A broker refused this message: keep it, retry it not before ``until``. Returns how
        many times it has been refused."""
        with self.transaction(durable=False):
            row = self.db.execute(
                "UPDATE outbox SET parked_until = ?, refused = ?, attempts = attempts + 1 WHERE seq = ?"
                " RETURNING attempts",
                (until, reason, seq),
            ).fetchone()
        return 0 if row is None else int(row[0])

    def refused(self) -> dict[str, int]:
        """Messages kept because a broker refused them, by reason."""
        rows = self.db.execute("SELECT refused, COUNT(*) FROM outbox WHERE refused IS NOT NULL GROUP BY refused")
        return {str(reason): int(count) for reason, count in rows}

    def delivered(self, seqs: list[int]) -> None:
        """Forget messages once their PUBACK arrived (not durable: a replay is a duplicate)."""
        if not seqs:
            return
        with self.transaction(durable=False):
            self._delete_outbox(seqs)

    # ----- dead letters -------------------------------------------------------------------
    def dead_letter(self, topic: str, payload: bytes, error: str, now: float) -> None:
        """Keep an inbound message whose handling failed with an unexpected error, so it is
        never acknowledged and dropped (inside the caller's transaction). The newest
        ``DEAD_LETTERS_KEEP`` are kept."""
        self.db.execute(
            "INSERT INTO dead_letters (ts, topic, payload, error) VALUES (?, ?, ?, ?)",
            (now, topic, bytes(payload), error[: self.DEAD_LETTER_ERROR_CHARS]),
        )
        self.db.execute(
            "DELETE FROM dead_letters WHERE id <= (SELECT id FROM dead_letters ORDER BY id DESC LIMIT 1 OFFSET ?)",
            (self.DEAD_LETTERS_KEEP,),
        )

    def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        """Newest first: ``id``, ``ts``, ``topic``, ``payload`` (bytes), ``error``."""
        rows = self.db.execute(
            "SELECT id, ts, topic, payload, error FROM dead_letters ORDER BY id DESC LIMIT ?", (limit,)
        ).fetchall()
        return [{"id": r[0], "ts": r[1], "topic": r[2], "payload": bytes(r[3]), "error": r[4]} for r in rows]

    # ----- key/value ----------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        """Set a value (inside the caller's transaction), e.g. the dongle's last boot nonce."""
        self.db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    # ----- timers -------------------------------------------------------------------------
    def put_timer(self, timer: Timer) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO timers (timer_id, due, kind, data) VALUES (?, ?, ?, ?)",
            (timer.timer_id, timer.due, timer.kind, json.dumps(timer.data)),
        )

    def delete_timer(self, timer_id: str) -> None:
        self.db.execute("DELETE FROM timers WHERE timer_id = ?", (timer_id,))

    def timers(self) -> list[Timer]:
        rows = self.db.execute("SELECT timer_id, due, kind, data FROM timers ORDER BY due").fetchall()
        return [Timer(r[0], r[1], r[2], json.loads(r[3])) for r in rows]

    # ----- alerts -------------------------------------------------------------------------
    def put_alert(self, alert: dict[str, Any]) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO alerts (alert_id, created, device, rule, priority, message,"
            " chain, step, responder, status, updated) VALUES (:alert_id, :created, :device,"
            " :rule, :priority, :message, :chain, :step, :responder, :status, :updated)",
            alert,
        )

    def alert(self, alert_id: str) -> dict[str, Any] | None:
        cur = self.db.execute("SELECT * FROM alerts WHERE alert_id = ?", (alert_id,))
        row = cur.fetchone()
        if row is None:
            return None
        return dict(zip([c[0] for c in cur.description], row, strict=True))

    def alerts(self, limit: int = 100) -> list[dict[str, Any]]:
        cur = self.db.execute("SELECT * FROM alerts ORDER BY created DESC LIMIT ?", (limit,))
        names = [c[0] for c in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    # ----- traces -------------------------------------------------------------------------
    def add_traces(self, traces: list[dict[str, Any]], keep_per_rule: int) -> None:
        """Keep the newest ``keep_per_rule`` traces of each rule (older ones are not even written)."""
        newest: dict[str, list[dict[str, Any]]] = {}
        for trace in reversed(traces):
            kept = newest.setdefault(trace["rule"], [])
            if len(kept) < keep_per_rule:
                kept.append(trace)
        traces = [t for kept in newest.values() for t in reversed(kept)]
        if not traces:
            return
        with self.transaction(durable=False):
            self.db.executemany(
                "INSERT INTO traces (rule, ts, body) VALUES (?, ?, ?)",
                [(t["rule"], t["ts"], json.dumps(t)) for t in traces],
            )
            for rule in {t["rule"] for t in traces}:
                self.db.execute(
                    "DELETE FROM traces WHERE rule = ? AND id NOT IN"
                    " (SELECT id FROM traces WHERE rule = ? ORDER BY id DESC LIMIT ?)",
                    (rule, rule, keep_per_rule),
                )

    def traces(self, rule: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        if rule is None:
            rows = self.db.execute("SELECT body FROM traces ORDER BY id DESC LIMIT ?", (limit,))
        else:
            rows = self.db.execute("SELECT body FROM traces WHERE rule = ? ORDER BY id DESC LIMIT ?", (rule, limit))
        return [json.loads(r[0]) for r in rows.fetchall()]

    # ----- shadow -------------------------------------------------------------------------
    def set_desired(self, device: str, desired: dict[str, Any], now: float) -> None:
        self.db.execute(
            "INSERT INTO shadow (device, desired, updated) VALUES (?, ?, ?)"
            " ON CONFLICT(device) DO UPDATE SET desired = excluded.desired, updated = excluded.updated",
            (device, json.dumps(desired), now),
        )

    def set_reported(self, device: str, reported: dict[str, Any], now: float) -> None:
        self.db.execute(
            "INSERT INTO shadow (device, reported, updated) VALUES (?, ?, ?)"
            " ON CONFLICT(device) DO UPDATE SET reported = excluded.reported, updated = excluded.updated",
            (device, json.dumps(reported), now),
        )

    def shadow(self) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
        rows = self.db.execute("SELECT device, desired, reported FROM shadow").fetchall()
        return {r[0]: (json.loads(r[1]), json.loads(r[2])) for r in rows}

    # ----- counters -----------------------------------------------------------------------
    def add_counts(self, counts: dict[str, int]) -> None:
        if not counts:
            return
        with self.transaction(durable=False):
            self.db.executemany(
                "INSERT INTO counters (name, value) VALUES (?, ?)"
                " ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                list(counts.items()),
            )

    def counters(self) -> dict[str, int]:
        return {r[0]: r[1] for r in self.db.execute("SELECT name, value FROM counters")}

    def integrity_ok(self) -> bool:
        return bool(self.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok")
