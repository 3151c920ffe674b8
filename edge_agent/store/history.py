"""The gateway's field history: what the twin calibrates from (``twin calibrate``).

Owns: four small append-only tables beside the store's own, and every statement that writes
them. They are written inside the transaction that changes the state they describe, so a
crash keeps both or neither:

* ``alert_log``: every change of an alert's status, step or responder (raised, notified,
  escalated, acknowledged, unacknowledged, resolved, ...). Written by SQLite triggers on the
  ``alerts`` table, so whatever code changes an alert (``store.alerts.put`` or a plain
  UPDATE) is logged in the same statement, without a call in the engine.
* ``event_log``: incidents (wearable events other than heartbeats and vitals) and lamp
  failures and repairs (``fault`` when a lamp's fault bits turn non-zero, ``repair`` when they
  clear; decided against the log itself, so a restart neither repeats nor loses one).
* ``motion_hourly``: camera detections (person, vehicle, motion) counted per UTC hour and
  zone: one row per hour and zone however busy the street.
* ``link_log``: the uplink going down and coming back (``up`` 0/1).

Plus ``census`` (the gateway's devices by kind, group and zone, and since when: the exposure the
rates are divided by) and ``meta['history.since']`` (when this history started).

Bounded: every table keeps its newest ``KEEP`` rows (pruned by id in the insert trigger);
``motion_hourly`` gets one row per hour and zone (about 26,000 a year for three zones).
Readers: ``twin.calibrate`` opens the file read-only; the schema is the contract.
Must not import: engine, transports, agent.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable

from edge_agent.models import Event

KEEP = 200_000  # newest rows kept per log table

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS alert_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id TEXT NOT NULL,
    ts REAL NOT NULL,
    status TEXT NOT NULL,
    step INTEGER NOT NULL,
    responder TEXT,
    rule TEXT NOT NULL,
    chain TEXT,
    device TEXT NOT NULL,
    priority INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS alert_log_alert ON alert_log (alert_id, id);
CREATE TRIGGER IF NOT EXISTS alert_log_insert BEFORE INSERT ON alerts
WHEN NOT EXISTS (SELECT 1 FROM alerts WHERE alert_id = NEW.alert_id AND status = NEW.status
                 AND step = NEW.step AND responder IS NEW.responder)
BEGIN
    INSERT INTO alert_log (alert_id, ts, status, step, responder, rule, chain, device, priority, created)
    VALUES (NEW.alert_id, NEW.updated, NEW.status, NEW.step, NEW.responder, NEW.rule, NEW.chain,
            NEW.device, NEW.priority, NEW.created);
END;
CREATE TRIGGER IF NOT EXISTS alert_log_update AFTER UPDATE OF status, step, responder ON alerts
WHEN OLD.status IS NOT NEW.status OR OLD.step IS NOT NEW.step OR OLD.responder IS NOT NEW.responder
BEGIN
    INSERT INTO alert_log (alert_id, ts, status, step, responder, rule, chain, device, priority, created)
    VALUES (NEW.alert_id, NEW.updated, NEW.status, NEW.step, NEW.responder, NEW.rule, NEW.chain,
            NEW.device, NEW.priority, NEW.created);
END;
CREATE TRIGGER IF NOT EXISTS alert_log_keep AFTER INSERT ON alert_log
BEGIN DELETE FROM alert_log WHERE id <= NEW.id - {KEEP}; END;

CREATE TABLE IF NOT EXISTS event_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    device TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    grp TEXT,
    detail INTEGER
);
CREATE INDEX IF NOT EXISTS event_log_device ON event_log (device, id);
CREATE TRIGGER IF NOT EXISTS event_log_keep AFTER INSERT ON event_log
BEGIN DELETE FROM event_log WHERE id <= NEW.id - {KEEP}; END;

CREATE TABLE IF NOT EXISTS motion_hourly (
    hour REAL NOT NULL,
    zone TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (hour, zone)
);

CREATE TABLE IF NOT EXISTS link_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    link TEXT NOT NULL,
    up INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS link_log_keep AFTER INSERT ON link_log
BEGIN DELETE FROM link_log WHERE id <= NEW.id - {KEEP}; END;

CREATE TABLE IF NOT EXISTS census (
    device TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    grp TEXT,
    zone TEXT,
    since REAL NOT NULL
);
"""

MOTION = frozenset({"person", "vehicle", "motion"})
NOT_INCIDENTS = frozenset({"heartbeat", "vitals", "state", "online", "offline"})


Device = tuple[str, str, str | None, str | None]  # id, kind, group, zone


class History:
    """The field history's tables on the store's connection (``store.history``)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def create(self) -> None:
        """The history tables and triggers (idempotent: no write when they exist, so it works
        while another process holds the database's write lock)."""
        self.db.executescript(SCHEMA)

    def install(self, devices: Iterable[Device], now: float) -> None:
        """Create the history tables and triggers (idempotent) and record the gateway's devices
        ``(id, kind, group, zone)``; a device already in the census keeps its ``since``. Run once
        at start, outside any transaction (its own)."""
        db = self.db
        self.create()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('history.since', ?)", (repr(now),))
            db.executemany(
                "INSERT INTO census (device, kind, grp, zone, since) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT(device) DO UPDATE SET kind = excluded.kind, grp = excluded.grp, zone = excluded.zone",
                [(device, kind, group, zone, now) for device, kind, group, zone in devices],
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def record(self, event: Event) -> None:
        """Log what calibration needs of one device event (inside the caller's transaction):
        incidents, lamp faults and repairs, motion counts. Other events are not logged."""
        if event.kind == "camera" and event.name in MOTION:
            hour = math.floor(event.ts / 3600.0) * 3600.0
            self.db.execute(
                "INSERT INTO motion_hourly (hour, zone, count) VALUES (?, ?, 1)"
                " ON CONFLICT(hour, zone) DO UPDATE SET count = count + 1",
                (hour, event.zone or ""),
            )
        elif event.kind == "lamp" and event.name == "state":
            faults = event.data.get("faults", 0)
            self.record_lamp_faults(event.device, event.group, int(faults) if isinstance(faults, int) else 0, event.ts)
        elif event.kind == "wearable" and event.name not in NOT_INCIDENTS:
            self.db.execute(
                "INSERT INTO event_log (ts, device, kind, name, grp) VALUES (?, ?, ?, ?, ?)",
                (event.ts, event.device, event.kind, event.name, event.group),
            )

    def record_lamp_faults(self, lamp: str, group: str | None, faults: int, now: float) -> None:
        """A lamp reported its fault bits: log ``fault`` when they turn non-zero, ``repair`` when
        they clear (against the last logged one, so a repeated report or a restart logs nothing)."""
        row = self.db.execute(
            "SELECT name FROM event_log WHERE device = ? AND name IN ('fault', 'repair') ORDER BY id DESC LIMIT 1",
            (lamp,),
        ).fetchone()
        faulty = row is not None and row[0] == "fault"
        if bool(faults) == faulty:
            return
        self.db.execute(
            "INSERT INTO event_log (ts, device, kind, name, grp, detail) VALUES (?, ?, 'lamp', ?, ?, ?)",
            (now, lamp, "fault" if faults else "repair", group, faults or None),
        )

    def record_link(self, link: str, up: bool, now: float) -> None:
        """The link went down (``up=False``) or came back (inside the caller's transaction, or
        on its own: a single statement commits by itself)."""
        self.db.execute("INSERT INTO link_log (ts, link, up) VALUES (?, ?, ?)", (now, link, int(up)))
