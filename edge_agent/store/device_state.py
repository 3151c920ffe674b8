"""Device state: what each device was last told (desired) and last said (reported), what AWS
IoT calls a device shadow (in this code base "shadow" means only shadow mode: edge_agent/agent/shadow.py).

Owns: the ``device_state`` table. The agent keeps both in memory and flushes them here now and then
(edge_agent/agent/loops.py), inside its transaction; ``edge-agent versions`` reads them.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any


class DeviceState:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def set_desired(self, device: str, desired: dict[str, Any], now: float) -> None:
        self.db.execute(
            "INSERT INTO device_state (device, desired, updated) VALUES (?, ?, ?)"
            " ON CONFLICT(device) DO UPDATE SET desired = excluded.desired, updated = excluded.updated",
            (device, json.dumps(desired), now),
        )

    def set_reported(self, device: str, reported: dict[str, Any], now: float) -> None:
        self.db.execute(
            "INSERT INTO device_state (device, reported, updated) VALUES (?, ?, ?)"
            " ON CONFLICT(device) DO UPDATE SET reported = excluded.reported, updated = excluded.updated",
            (device, json.dumps(reported), now),
        )

    def all(self) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
        """device -> (desired, reported)."""
        rows = self.db.execute("SELECT device, desired, reported FROM device_state").fetchall()
        return {r[0]: (json.loads(r[1]), json.loads(r[2])) for r in rows}
