"""The notification ledger: per alert, per notification of it (``n``), per channel, how far the
message got, from planned to a person's phone.

Owns: the ``notifications`` table. A row is written with the alert's change that caused it (in
the caller's transaction) and moves ``waiting`` (a delayed channel, or SMS held by pacing) ->
``queued`` (its outbox row ``msg_id`` exists) -> ``handed`` (the channel took it: the modem
daemon's file written, the broker's PUBACK, the call placed, the push accepted) -> ``delivered``
(a delivery report, the far end rang) or ``failed`` (with the reason); ``cancelled`` when the
step no longer needs it (acknowledged, escalated, resolved). Several rows may share one
``msg_id`` (one SMS standing for a storm of alerts). Nothing here stops an escalation: only a
person's acknowledgement does (edge_agent/policy/dispatch_state.py). ``twin calibrate`` reads
this table from the store file to fit channel delays, failures and answer delays per role.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

SCHEMA = """
CREATE TABLE IF NOT EXISTS notifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id TEXT NOT NULL,
    n INTEGER NOT NULL,          -- which notification of the alert (1 the first; +1 per escalation)
    step INTEGER NOT NULL,       -- the chain step
    responder TEXT NOT NULL,
    role TEXT NOT NULL,          -- the responder's role (the twin's tier)
    channel TEXT NOT NULL,       -- app | sms | ring | push
    target TEXT NOT NULL,        -- phone number, responder id (push) or app topic
    state TEXT NOT NULL,         -- waiting | queued | handed | delivered | failed | cancelled
    reason TEXT,                 -- why it failed or was cancelled
    due REAL NOT NULL,           -- epoch s when it is to go (queued + the chain's `after`)
    queued REAL NOT NULL,        -- epoch s the row was written
    handed REAL,
    delivered REAL,
    failed REAL,
    msg_id TEXT,                 -- the outbox message carrying it (several rows: one storm SMS)
    tried REAL                   -- wall-clock s its channel was first offered it (a crash may interrupt a hand-off)
);
CREATE INDEX IF NOT EXISTS notifications_alert ON notifications (alert_id, n);
CREATE INDEX IF NOT EXISTS notifications_msg ON notifications (msg_id);
CREATE INDEX IF NOT EXISTS notifications_waiting ON notifications (state, due) WHERE state = 'waiting';
"""

OPEN_STATES = ("waiting", "queued", "handed")  # not yet known to have reached the phone or failed
STATES = ("waiting", "queued", "handed", "delivered", "failed", "cancelled")


@dataclass(frozen=True, slots=True)
class Notification:
    id: int
    alert_id: str
    n: int
    step: int
    responder: str
    role: str
    channel: str
    target: str
    state: str
    reason: str | None
    due: float
    queued: float
    handed: float | None
    delivered: float | None
    failed: float | None
    msg_id: str | None
    tried: float | None


_COLUMNS = ", ".join(Notification.__slots__)


class Notifications:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        db.executescript(SCHEMA)

    def add(
        self,
        *,
        alert_id: str,
        n: int,
        step: int,
        responder: str,
        role: str,
        channel: str,
        target: str,
        due: float,
        now: float,
    ) -> int:
        cur = self.db.execute(
            "INSERT INTO notifications (alert_id, n, step, responder, role, channel, target, state, due, queued)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, 'waiting', ?, ?)",
            (alert_id, n, step, responder, role, channel, target, due, now),
        )
        return int(cur.lastrowid or 0)

    def waiting_due(self, now: float) -> list[Notification]:
        """Rows due by ``now`` that are not yet in the outbox, oldest first."""
        return self._rows("WHERE state = 'waiting' AND due <= ? ORDER BY due, id", (now,))

    def any_due(self, now: float) -> bool:
        return (
            self.db.execute(
                "SELECT 1 FROM notifications WHERE state = 'waiting' AND due <= ? LIMIT 1", (now,)
            ).fetchone()
            is not None
        )

    def queue(self, ids: Iterable[int], msg_id: str) -> None:
        self.db.executemany(
            "UPDATE notifications SET state = 'queued', msg_id = ? WHERE id = ?",
            [(msg_id, i) for i in ids],
        )

    def tried(self, msg_id: str, wall: float) -> None:
        self.db.execute("UPDATE notifications SET tried = ? WHERE msg_id = ? AND tried IS NULL", (wall, msg_id))

    def handed(self, msg_ids: Iterable[str], now: float) -> None:
        self.db.executemany(
            "UPDATE notifications SET state = 'handed', handed = ? WHERE msg_id = ? AND state IN ('queued', 'failed')",
            [(now, m) for m in msg_ids],
        )

    def delivered(self, msg_id: str, now: float) -> list[Notification]:
        self.db.execute(
            "UPDATE notifications SET state = 'delivered', delivered = ?"
            " WHERE msg_id = ? AND state IN ('queued', 'handed')",
            (now, msg_id),
        )
        return self._rows("WHERE msg_id = ?", (msg_id,))

    def fail(self, ids: Iterable[int], reason: str, now: float) -> None:
        self.db.executemany(
            "UPDATE notifications SET state = 'failed', failed = ?, reason = ?"
            " WHERE id = ? AND state IN ('waiting', 'queued', 'handed')",
            [(now, reason, i) for i in ids],
        )

    def cancel(self, ids: Iterable[int], reason: str) -> None:
        self.db.executemany(
            "UPDATE notifications SET state = 'cancelled', reason = ? WHERE id = ? AND state = 'waiting'",
            [(reason, i) for i in ids],
        )

    def bring_forward(self, alert_id: str, n: int, now: float) -> int:
        """A step's delayed channels go now (the ones before them all failed)."""
        cur = self.db.execute(
            "UPDATE notifications SET due = ? WHERE alert_id = ? AND n = ? AND state = 'waiting' AND due > ?",
            (now, alert_id, n, now),
        )
        return cur.rowcount

    def by_msg(self, msg_id: str) -> list[Notification]:
        return self._rows("WHERE msg_id = ?", (msg_id,))

    def of_step(self, alert_id: str, n: int) -> list[Notification]:
        return self._rows("WHERE alert_id = ? AND n = ? ORDER BY id", (alert_id, n))

    def of_alerts(self, alert_ids: Iterable[str]) -> dict[str, list[Notification]]:
        """Each alert's rows in the order written (the status page: who was reached how, when)."""
        ids = list(alert_ids)
        out: dict[str, list[Notification]] = {a: [] for a in ids}
        if ids:
            marks = ", ".join("?" * len(ids))
            for row in self._rows(f"WHERE alert_id IN ({marks}) ORDER BY id", ids):
                out[row.alert_id].append(row)
        return out

    def latest_n(self, alert_id: str) -> int:
        row = self.db.execute("SELECT MAX(n) FROM notifications WHERE alert_id = ?", (alert_id,)).fetchone()
        return int(row[0] or 0)

    def sent_since(self, channel: str, since: float) -> int:
        """Messages (not rows: a storm SMS is one) of ``channel`` queued since ``since``."""
        row = self.db.execute(
            "SELECT COUNT(DISTINCT msg_id) FROM notifications WHERE channel = ? AND msg_id IS NOT NULL AND queued >= ?",
            (channel, since),
        ).fetchone()
        return int(row[0])

    def last_queued_to(self, channel: str, target: str) -> float | None:
        """When the newest message of ``channel`` to ``target`` went into the outbox (the
        queued time of its newest row: close enough for pacing)."""
        row = self.db.execute(
            "SELECT MAX(COALESCE(handed, queued)) FROM notifications WHERE channel = ? AND target = ?"
            " AND msg_id IS NOT NULL",
            (channel, target),
        ).fetchone()
        return None if row[0] is None else float(row[0])

    def by_channel_state(self) -> dict[tuple[str, str], int]:
        """(channel, state) -> rows: /metrics."""
        rows = self.db.execute("SELECT channel, state, COUNT(*) FROM notifications GROUP BY channel, state")
        return {(str(c), str(s)): int(k) for c, s, k in rows}

    def _rows(self, where: str, args: Iterable[object]) -> list[Notification]:
        cur = self.db.execute(f"SELECT {_COLUMNS} FROM notifications {where}", tuple(args))
        return [Notification(*row) for row in cur.fetchall()]
