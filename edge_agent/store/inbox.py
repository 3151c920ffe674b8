"""What came in: inbound messages already seen, and the ones whose handling failed.

Owns: the ``inbox`` table (a device's (device, seq) and the dongle's frames, so a redelivery is
recognised) and the ``dead_letters`` table (an inbound message whose handling failed with an
unexpected error, kept rather than acknowledged and dropped). Writes go into the caller's
transaction.
"""

from __future__ import annotations

import sqlite3
from typing import Any


class Inbox:
    DONGLE_WINDOW = 128
    DEAD_LETTERS_KEEP = 1_000  # the newest dead letters kept
    DEAD_LETTER_ERROR_CHARS = 4_000  # an error text (a traceback) is cut to this length

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def first_time(self, device: str, seq: int, now: float) -> bool:
        """Record an inbound (device, seq); False if it was seen before (a redelivery)."""
        cursor = self.db.execute("INSERT OR IGNORE INTO inbox (device, seq, ts) VALUES (?, ?, ?)", (device, seq, now))
        return cursor.rowcount == 1

    def last_seqs(self) -> dict[str, int]:
        """Each device's newest recorded seq (dongle frames left out): where its numbering stands."""
        rows = self.db.execute(
            "SELECT device, seq FROM inbox WHERE rowid IN (SELECT max(rowid) FROM inbox GROUP BY device)"
            " AND device NOT LIKE 'dongle:%'"
        )
        return {str(device): int(seq) for device, seq in rows}

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

    def prune(self, older_than: float) -> None:
        self.db.execute("DELETE FROM inbox WHERE ts < ?", (older_than,))

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
