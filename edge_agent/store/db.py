"""The gateway's SQLite state: outbox, timers, alerts, traces, shadow, counters.

Owns: the schema and every statement against it. WAL mode; alerts and anything an alert
depends on commit with ``synchronous=FULL`` (fsync before the commit returns); telemetry may
commit with ``NORMAL`` (a power cut can lose the last commits of telemetry, never an alert).
Every outbox message gets the agent's own id before it is stored; MQTT packet ids are never
used for identity. Must not import: engine, transports, agent.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    msg_id TEXT NOT NULL UNIQUE,
    link TEXT NOT NULL,              -- 'south' or 'north'
    priority INTEGER NOT NULL,       -- 0 alert, 1 event, 2 telemetry
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL DEFAULT 1,
    retain INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_order ON outbox (link, priority, seq);
CREATE TABLE IF NOT EXISTS timers (
    timer_id TEXT PRIMARY KEY,
    due REAL NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS alerts (
    alert_id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    device TEXT NOT NULL,
    rule TEXT NOT NULL,
    priority INTEGER NOT NULL,
    message TEXT NOT NULL,
    chain TEXT,
    step INTEGER NOT NULL DEFAULT 0,
    responder TEXT,
    status TEXT NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS traces (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    rule TEXT NOT NULL,
    ts REAL NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS traces_rule ON traces (rule, id);
CREATE TABLE IF NOT EXISTS shadow (
    device TEXT PRIMARY KEY,
    desired TEXT NOT NULL DEFAULT '{}',
    reported TEXT NOT NULL DEFAULT '{}',
    updated REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS inbox (
    device TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts REAL NOT NULL,
    PRIMARY KEY (device, seq)
);
"""

ALERT_PRIORITY = 0
EVENT_PRIORITY = 1
TELEMETRY_PRIORITY = 2


def new_id() -> str:
    """The agent's own message id: unique across restarts and reconnects."""
    return uuid.uuid4().hex


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


class _Checkpointer:
    """A background thread with its own connection running passive WAL checkpoints once
    enough has been written (an idle gateway never checkpoints, so it never fsyncs for it)."""

    EVERY_COMMITS = 256

    def __init__(self, path: Path, interval: float = 0.25) -> None:
        self._path = path
        self._interval = interval
        self.commits = 0  # incremented by the store's connection after each commit
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        db = sqlite3.connect(str(self._path), isolation_level=None)
        try:
            while not self._stop.wait(self._interval):
                if self.commits < self.EVERY_COMMITS:
                    continue
                self.commits = 0
                with contextlib.suppress(sqlite3.Error):  # busy: try again next time
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            db.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


class Store:
    """One SQLite database per gateway. Not thread-safe: used from the agent's event loop.

    Outbox quota: when the queued payloads exceed ``quota_bytes``, the oldest telemetry is
    evicted (and counted as ``outbox.evicted``); alerts and events are never evicted.
    """

    QUOTA_CHECK_EVERY = 64  # telemetry enqueues between two size checks

    def __init__(self, path: Path | str, quota_bytes: int = 64 << 20) -> None:
        self.quota_bytes = quota_bytes
        self._since_check = 0
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        self._checkpointer: _Checkpointer | None = None
        if str(path) != ":memory:":
            # Checkpoints (copying the WAL into the database, with fsync) run on a thread of
            # their own, so they never stall the event loop: inline auto-checkpoints added
            # 10-20 ms to every thousandth message.
            self.db.execute("PRAGMA wal_autocheckpoint=0")
            self._checkpointer = _Checkpointer(self.path)
        self._durable = True

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
        with contextlib.suppress(sqlite3.Error):
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.db.close()

    @contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One atomic commit; ``durable`` commits with fsync (alerts), else NORMAL (telemetry)."""
        if durable != self._durable:
            self.db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._durable = durable
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
        if self._checkpointer is not None:
            self._checkpointer.commits += 1

    async def sync(self) -> None:
        """Return once everything committed before the call is on disk.

        Callers await this before they say "got it" (an MQTT acknowledgement, a dongle ACK).
        Today durable transactions fsync inline, so there is nothing left to wait for.
        """

    # ----- outbox -------------------------------------------------------------------------
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
        """Add a message (inside the caller's transaction if one is open). Returns its id."""
        msg_id = msg_id or new_id()
        self.db.execute(
            "INSERT INTO outbox (msg_id, link, priority, topic, payload, qos, retain, created)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (msg_id, link, priority, topic, payload, qos, int(retain), now),
        )
        if priority == TELEMETRY_PRIORITY:
            self._since_check += 1
            if self._since_check >= self.QUOTA_CHECK_EVERY:
                self._since_check = 0
                self.enforce_quota()
        return msg_id

    def outbox_bytes(self) -> int:
        return int(self.db.execute("SELECT COALESCE(SUM(LENGTH(payload)), 0) FROM outbox").fetchone()[0])

    def enforce_quota(self) -> int:
        """Evict the oldest telemetry until the outbox fits its quota; returns how many."""
        evicted = 0
        excess = self.outbox_bytes() - self.quota_bytes
        while excess > 0:
            rows = self.db.execute(
                "SELECT seq, LENGTH(payload) FROM outbox WHERE priority = ? ORDER BY seq LIMIT 256",
                (TELEMETRY_PRIORITY,),
            ).fetchall()
            if not rows:
                break  # only alerts and events left: they are never evicted
            drop = []
            for seq, size in rows:
                drop.append((seq,))
                excess -= size
                if excess <= 0:
                    break
            self.db.executemany("DELETE FROM outbox WHERE seq = ?", drop)
            evicted += len(drop)
        if evicted:
            self.db.execute(
                "INSERT INTO counters (name, value) VALUES ('outbox.evicted', ?)"
                " ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                (evicted,),
            )
        return evicted

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

    def prune_inbox(self, older_than: float) -> None:
        self.db.execute("DELETE FROM inbox WHERE ts < ?", (older_than,))

    def pending(self, link: str, limit: int = 100) -> list[OutboxMessage]:
        """Oldest first within priority: alerts before events before telemetry."""
        rows = self.db.execute(
            "SELECT seq, msg_id, link, priority, topic, payload, qos, retain FROM outbox"
            " WHERE link = ? ORDER BY priority, seq LIMIT ?",
            (link, limit),
        ).fetchall()
        return [OutboxMessage(r[0], r[1], r[2], r[3], r[4], bytes(r[5]), r[6], bool(r[7])) for r in rows]

    def delivered(self, seqs: list[int]) -> None:
        """Forget messages once their PUBACK arrived (NORMAL sync: a replay is a duplicate)."""
        if not seqs:
            return
        with self.transaction(durable=False):
            self.db.executemany("DELETE FROM outbox WHERE seq = ?", [(seq,) for seq in seqs])

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
