"""The alerts table: every alert the engine raised, as dispatch last changed it.

Owns: writing and reading ``alerts`` rows as ``edge_agent.models.Alert`` (the history's
triggers log each change of status, step or responder in the same statement: see
edge_agent/store/history.py), and the read that rebuilds the gateway's dispatch state
(edge_agent/engine/dispatching.py): alerts with a chain still notified, escalated, queued or
acknowledged (a responder busy until it is resolved), oldest change first, which is the order
queued alerts wait in. Writes go into the caller's transaction.
"""

from __future__ import annotations

import sqlite3

import msgspec

from edge_agent.models import Alert

DISPATCH_OPEN = ("notified", "escalated", "queued", "acknowledged")
OPEN_STATUSES = ("raised", "notified", "escalated", "unacknowledged")  # what the status page shows as open


class Alerts:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def put(self, alert: Alert) -> None:
        """Insert or replace the alert's row (inside the caller's transaction)."""
        self.db.execute(
            "INSERT OR REPLACE INTO alerts (alert_id, created, device, rule, priority, message,"
            " chain, step, responder, status, updated) VALUES (:alert_id, :created, :device,"
            " :rule, :priority, :message, :chain, :step, :responder, :status, :updated)",
            msgspec.structs.asdict(alert),
        )

    def get(self, alert_id: str) -> Alert | None:
        cur = self.db.execute("SELECT * FROM alerts WHERE alert_id = ?", (alert_id,))
        row = cur.fetchone()
        if row is None:
            return None
        return Alert(**dict(zip([c[0] for c in cur.description], row, strict=True)))

    def newest(self, limit: int = 100) -> list[Alert]:
        """The most recently raised first."""
        return self._rows(self.db.execute("SELECT * FROM alerts ORDER BY created DESC LIMIT ?", (limit,)))

    def answerable(self) -> list[Alert]:
        """Alerts a person may still acknowledge or resolve (newest change first)."""
        statuses = (*DISPATCH_OPEN, "unacknowledged")
        placeholders = ", ".join("?" * len(statuses))
        return self._rows(
            self.db.execute(f"SELECT * FROM alerts WHERE status IN ({placeholders}) ORDER BY updated DESC", statuses)
        )

    def by_status(self) -> dict[str, int]:
        rows = self.db.execute("SELECT status, COUNT(*) FROM alerts GROUP BY status").fetchall()
        return {str(r[0]): int(r[1]) for r in rows}

    def recent(self, limit: int = 20) -> list[Alert]:
        """Open alerts first (newest change first), then the most recently closed ones."""
        placeholders = ", ".join("?" * len(OPEN_STATUSES))
        return self._rows(
            self.db.execute(
                f"SELECT * FROM alerts ORDER BY status IN ({placeholders}) DESC, updated DESC LIMIT ?",
                (*OPEN_STATUSES, limit),
            )
        )

    def open_for_dispatch(self) -> list[Alert]:
        """Alerts with a chain that dispatch still holds, oldest change first."""
        placeholders = ", ".join("?" * len(DISPATCH_OPEN))
        cur = self.db.execute(
            f"SELECT * FROM alerts WHERE chain IS NOT NULL AND status IN ({placeholders}) ORDER BY updated, created",
            DISPATCH_OPEN,
        )
        return self._rows(cur)

    @staticmethod
    def _rows(cur: sqlite3.Cursor) -> list[Alert]:
        names = [c[0] for c in cur.description]
        return [Alert(**dict(zip(names, row, strict=True))) for row in cur.fetchall()]
