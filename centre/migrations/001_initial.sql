-- The centre's schema, version 1. Portable SQL: it runs unchanged on PostgreSQL and SQLite.
-- Times are UNIX seconds (DOUBLE PRECISION); JSON documents are TEXT; flags are INTEGER 0/1.
-- Natural keys everywhere (no sequences), so every write is an idempotent upsert.

-- every north message with a msg_id that was taken: a redelivery finds its id here and counts once
CREATE TABLE seen_messages (
    msg_id TEXT PRIMARY KEY,
    gateway TEXT NOT NULL,
    received DOUBLE PRECISION NOT NULL
);
CREATE INDEX seen_messages_received ON seen_messages (received);

CREATE TABLE gateways (
    gateway TEXT PRIMARY KEY,
    online INTEGER NOT NULL DEFAULT 0,
    status_changed DOUBLE PRECISION,       -- when `status` last changed online <-> offline
    last_seen DOUBLE PRECISION,            -- the last message of any kind from this gateway
    policy_version INTEGER,                -- from its last accepted policy/ack or rollout summary
    lamps INTEGER NOT NULL DEFAULT 0,      -- from the retained `rollout` summary
    lamps_on_version INTEGER NOT NULL DEFAULT 0,
    outbox_depth INTEGER,                  -- from history/outages or status reports, when sent
    outages INTEGER NOT NULL DEFAULT 0     -- times the gateway went offline (last will)
);

CREATE TABLE alerts (
    alert_id TEXT PRIMARY KEY,
    gateway TEXT NOT NULL,
    device TEXT NOT NULL,
    kind TEXT NOT NULL,
    priority INTEGER NOT NULL,
    rule TEXT NOT NULL,
    message TEXT NOT NULL,
    status TEXT NOT NULL,
    responder TEXT,
    step INTEGER,
    raised DOUBLE PRECISION NOT NULL,      -- ts of the first change seen
    updated DOUBLE PRECISION NOT NULL      -- ts of the latest change applied
);
CREATE INDEX alerts_open ON alerts (status, updated);

-- every change of every alert, as the gateway sent it
CREATE TABLE alert_changes (
    msg_id TEXT PRIMARY KEY,
    alert_id TEXT NOT NULL,
    gateway TEXT NOT NULL,
    ts DOUBLE PRECISION NOT NULL,
    status TEXT NOT NULL,
    responder TEXT,
    step INTEGER,
    body TEXT NOT NULL                     -- the whole AlertMessage (channels, reached, ...)
);
CREATE INDEX alert_changes_alert ON alert_changes (alert_id, ts);

CREATE TABLE lamps (
    gateway TEXT NOT NULL,
    lamp TEXT NOT NULL,
    lamp_group TEXT NOT NULL DEFAULT '',   -- the telemetry's `group` when sent, else ''
    on_ INTEGER,
    level DOUBLE PRECISION,
    power_w DOUBLE PRECISION,
    energy_wh DOUBLE PRECISION,
    burn_hours DOUBLE PRECISION,
    faults INTEGER NOT NULL DEFAULT 0,
    policy_version INTEGER,                -- the version the lamp itself reports
    last_report DOUBLE PRECISION,
    PRIMARY KEY (gateway, lamp)
);

-- raw telemetry, kept [retention] raw_days
CREATE TABLE lamp_telemetry (
    msg_id TEXT PRIMARY KEY,
    gateway TEXT NOT NULL,
    lamp TEXT NOT NULL,
    ts DOUBLE PRECISION NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX lamp_telemetry_ts ON lamp_telemetry (ts);

-- telemetry rolled up per lamp per hour (hour = UNIX hour start); energy from the meter's deltas
CREATE TABLE lamp_hours (
    gateway TEXT NOT NULL,
    lamp TEXT NOT NULL,
    hour BIGINT NOT NULL,
    reports INTEGER NOT NULL,
    energy_wh DOUBLE PRECISION NOT NULL,   -- sum of positive meter deltas attributed to this hour
    level_sum DOUBLE PRECISION NOT NULL,
    power_w_max DOUBLE PRECISION NOT NULL,
    faults INTEGER NOT NULL,               -- OR of the fault bits reported in the hour
    PRIMARY KEY (gateway, lamp, hour)
);

-- the fault list: one row per fault episode of a lamp (faults != 0 until a report of 0)
CREATE TABLE lamp_faults (
    gateway TEXT NOT NULL,
    lamp TEXT NOT NULL,
    since DOUBLE PRECISION NOT NULL,
    faults INTEGER NOT NULL,
    cleared DOUBLE PRECISION,
    PRIMARY KEY (gateway, lamp, since)
);

-- signed bundles the centre knows (published by a rollout, or seen acked)
CREATE TABLE policy_versions (
    version INTEGER PRIMARY KEY,
    sha256 TEXT NOT NULL,
    name TEXT NOT NULL,
    bundle TEXT NOT NULL,                  -- the signed bundle as published (base64 of the bytes)
    created DOUBLE PRECISION NOT NULL
);

CREATE TABLE policy_acks (
    gateway TEXT NOT NULL,
    version INTEGER NOT NULL,
    status TEXT NOT NULL,                  -- accepted | rejected
    reason TEXT,
    ts DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (gateway, version, status)
);

CREATE TABLE rollouts (
    rollout_id TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    state TEXT NOT NULL,                   -- running | waiting_window | succeeded | aborted
    plan TEXT NOT NULL,                    -- JSON: canary, waves, abort_if, window, timeout
    wave INTEGER NOT NULL DEFAULT 0,       -- the wave in progress (0: canary)
    reason TEXT,                           -- why it aborted
    created DOUBLE PRECISION NOT NULL,
    updated DOUBLE PRECISION NOT NULL
);

CREATE TABLE rollout_targets (
    rollout_id TEXT NOT NULL,
    gateway TEXT NOT NULL,
    wave INTEGER NOT NULL,
    state TEXT NOT NULL,                   -- QUEUED | IN_PROGRESS | SUCCEEDED | REJECTED | TIMED_OUT | CANCELED
    started DOUBLE PRECISION,
    finished DOUBLE PRECISION,
    detail TEXT,
    PRIMARY KEY (rollout_id, gateway)
);

CREATE TABLE shadow_reports (
    gateway TEXT NOT NULL,
    candidate TEXT NOT NULL,
    day TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (gateway, candidate, day)
);

-- operators: argon2 hashes; role is 'viewer' (read-only) or 'operator'
CREATE TABLE users (
    username TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL
);

CREATE TABLE sessions (
    token_sha256 TEXT PRIMARY KEY,         -- the cookie's token is never stored, only its hash
    username TEXT NOT NULL,
    expires DOUBLE PRECISION NOT NULL
);

-- why messages were rejected, counted (a bad message never stops ingestion)
CREATE TABLE rejects (
    reason TEXT NOT NULL,
    topic_class TEXT NOT NULL,
    count BIGINT NOT NULL,
    last_detail TEXT,
    last_ts DOUBLE PRECISION,
    PRIMARY KEY (reason, topic_class)
);
