"""Named numbers and strings the agent keeps: the ``counters`` and ``meta`` tables.

Owns: ``Counters`` (totals flushed from memory, e.g. ``rejected.<reason>``; the outbox adds
``outbox.evicted`` and its ``seq.<link>.<device>`` sequences itself) and ``Meta`` (a small
key/value table: the dongle's last boot nonce, the shadow run's state, ``history.since``).
"""

from __future__ import annotations

import sqlite3

from edge_agent.store.transactions import Transactions


class Counters:
    def __init__(self, tx: Transactions) -> None:
        self._tx = tx
        self.db = tx.db

    def add(self, counts: dict[str, int]) -> None:
        """Add to the totals, in a (not durable) transaction of their own."""
        if not counts:
            return
        with self._tx.transaction(durable=False):
            self.db.executemany(
                "INSERT INTO counters (name, value) VALUES (?, ?)"
                " ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                list(counts.items()),
            )

    def all(self) -> dict[str, int]:
        return {r[0]: r[1] for r in self.db.execute("SELECT name, value FROM counters")}


class Meta:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def get(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set(self, key: str, value: str) -> None:
        """Set a value (inside the caller's transaction), e.g. the dongle's last boot nonce."""
        self.db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )
