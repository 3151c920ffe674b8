"""The gateway store's tables (each part of edge_agent/store/db.py owns the statements against its own)."""

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
    attempts INTEGER NOT NULL DEFAULT 0,
    parked_until REAL NOT NULL DEFAULT 0,  -- a broker refused it (MQTT 5 reason): not before then
    refused TEXT                           -- the broker's last refusal reason, e.g. not_authorized
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
CREATE TABLE IF NOT EXISTS device_state (
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
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    error TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""
