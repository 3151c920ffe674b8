"""The engine's persisted timers: ``for`` thresholds, absences, overrides, escalations.

Owns: the ``timers`` table and ``Timer``. Written inside the caller's transaction, together
with the effects the timer's change produced (edge_agent/engine/timer_queue.py keeps them in
memory, on a heap).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Timer:
    timer_id: str
    due: float
    kind: str
    data: dict[str, Any]


class Timers:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def put(self, timer: Timer) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO timers (timer_id, due, kind, data) VALUES (?, ?, ?, ?)",
            (timer.timer_id, timer.due, timer.kind, json.dumps(timer.data)),
        )

    def delete(self, timer_id: str) -> None:
        self.db.execute("DELETE FROM timers WHERE timer_id = ?", (timer_id,))

    def all(self) -> list[Timer]:
        """Every persisted timer, soonest first."""
        rows = self.db.execute("SELECT timer_id, due, kind, data FROM timers ORDER BY due").fetchall()
        return [Timer(r[0], r[1], r[2], json.loads(r[3])) for r in rows]
