"""The outbox: messages waiting for their broker's acknowledgement, alerts first.

Owns: the ``outbox`` table (enqueue, pending, park a refused message, delete delivered ones),
its quota and the per-device sequence numbers of outgoing messages. Every outbox message gets
the agent's own id before it is stored; MQTT packet ids are never used for identity. Writes go
into the caller's transaction on the store's one connection (edge_agent/store/transactions.py).

Outbox quota: a running total of the queued payload bytes is kept in memory (one
``SUM(LENGTH(payload))`` at open, then +/- on every enqueue, delivery and eviction, applied only
when the transaction commits). Each enqueue that leaves the total above ``quota_bytes`` evicts
the oldest telemetry (counted as ``outbox.evicted``); alerts and events are never evicted.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from edge_agent.store.transactions import Transactions

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
class LinkBacklog:
    """What waits for one link: the status page's and /metrics' outbox depth."""

    messages: int
    payload_bytes: int
    oldest_created: float | None  # the clock time the oldest waiting message was queued


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


class Outbox:
    """When the queued payloads exceed ``quota_bytes``, the oldest telemetry is evicted (and
    counted as ``outbox.evicted``); alerts and events are never evicted."""

    def __init__(self, tx: Transactions, quota_bytes: int) -> None:
        self.quota_bytes = quota_bytes
        self._tx = tx
        self.db = tx.db
        self._links: set[str] = set()
        queued = 0
        for link, size in self.db.execute("SELECT link, SUM(LENGTH(payload)) FROM outbox GROUP BY link"):
            self._links.add(str(link))
            queued += int(size)
        self._queued = tx.total(queued)

    @property
    def queued_bytes(self) -> int:
        """The running total of queued payload bytes, including the open transaction's changes:
        always equal to :meth:`outbox_bytes` without its full scan."""
        return self._queued.value

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
        self._queued.add(len(payload))
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
            with self._tx.transaction(durable=False):
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
            evicted += self._delete(drop)
        if evicted:
            self.db.execute(
                "INSERT INTO counters (name, value) VALUES ('outbox.evicted', ?)"
                " ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                (evicted,),
            )
        return evicted

    def _delete(self, seqs: Iterable[int]) -> int:
        """Delete these messages, account for their bytes; returns how many were there."""
        deleted = 0
        for chunk in _chunks(list(seqs)):
            sizes = self.db.execute(
                f"DELETE FROM outbox WHERE seq IN ({','.join('?' * len(chunk))}) RETURNING LENGTH(payload)",
                chunk,
            ).fetchall()
            deleted += len(sizes)
            self._queued.add(-sum(int(row[0]) for row in sizes))
        return deleted

    def next_seq(self, key: str) -> int:
        """The next number of a per-device sequence (inside the caller's transaction)."""
        row = self.db.execute(
            "INSERT INTO counters (name, value) VALUES (?, 1)"
            " ON CONFLICT(name) DO UPDATE SET value = value + 1 RETURNING value",
            (f"seq.{key}",),
        ).fetchone()
        return int(row[0])

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
        with self._tx.transaction(durable=False):
            row = self.db.execute(
                "UPDATE outbox SET parked_until = ?, refused = ?, attempts = attempts + 1 WHERE seq = ?"
                " RETURNING attempts",
                (until, reason, seq),
            ).fetchone()
        return 0 if row is None else int(row[0])

    def backlog(self) -> dict[str, LinkBacklog]:
        """Per link: messages waiting, their payload bytes, when the oldest was queued."""
        rows = self.db.execute(
            "SELECT link, COUNT(*), COALESCE(SUM(LENGTH(payload)), 0), MIN(created) FROM outbox GROUP BY link"
        ).fetchall()
        return {str(r[0]): LinkBacklog(int(r[1]), int(r[2]), None if r[3] is None else float(r[3])) for r in rows}

    def refused(self) -> dict[str, int]:
        """Messages kept because a broker refused them, by reason."""
        rows = self.db.execute("SELECT refused, COUNT(*) FROM outbox WHERE refused IS NOT NULL GROUP BY refused")
        return {str(reason): int(count) for reason, count in rows}

    def delivered(self, seqs: list[int]) -> None:
        """Forget messages once their PUBACK arrived (not durable: a replay is a duplicate)."""
        if not seqs:
            return
        with self._tx.transaction(durable=False):
            self._delete(seqs)

    def forget(self, seqs: list[int]) -> None:
        """``delivered`` inside the caller's transaction."""
        self._delete(seqs)


def add_missing_columns(db: sqlite3.Connection) -> None:
    """Columns added since a gateway's database was created (the outbox's refusal state)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(outbox)")}
    if columns and "parked_until" not in columns:
        db.execute("ALTER TABLE outbox ADD COLUMN parked_until REAL NOT NULL DEFAULT 0")
        db.execute("ALTER TABLE outbox ADD COLUMN refused TEXT")
