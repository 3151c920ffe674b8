-- The gateways' field history, mirrored from their `history` messages (edge_agent/agent/history_north.py):
-- the rows of each gateway's history tables (edge_agent/store/history.py, store/notifications.py) with
-- their own columns and keys, plus `gateway`. `twin calibrate --centre` reads them (twin/calibrate/centre.py).

CREATE TABLE history_since (
    gateway TEXT PRIMARY KEY,
    since DOUBLE PRECISION NOT NULL        -- when the gateway's history started (its meta history.since)
);

CREATE TABLE history_alert_log (
    gateway TEXT NOT NULL,
    id BIGINT NOT NULL,                    -- the gateway's row id: its order
    alert_id TEXT NOT NULL,
    ts DOUBLE PRECISION NOT NULL,
    status TEXT NOT NULL,
    step INTEGER NOT NULL,
    responder TEXT,
    rule TEXT NOT NULL,
    chain TEXT,
    device TEXT NOT NULL,
    priority INTEGER NOT NULL,
    PRIMARY KEY (gateway, id)
);

CREATE TABLE history_event_log (
    gateway TEXT NOT NULL,
    id BIGINT NOT NULL,
    ts DOUBLE PRECISION NOT NULL,
    device TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    grp TEXT,
    detail INTEGER,
    PRIMARY KEY (gateway, id)
);

CREATE TABLE history_link_log (
    gateway TEXT NOT NULL,
    id BIGINT NOT NULL,
    ts DOUBLE PRECISION NOT NULL,
    link TEXT NOT NULL,
    up INTEGER NOT NULL,
    PRIMARY KEY (gateway, id)
);

CREATE TABLE history_motion_hourly (
    gateway TEXT NOT NULL,
    hour DOUBLE PRECISION NOT NULL,
    zone TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (gateway, hour, zone)
);

CREATE TABLE history_census (
    gateway TEXT NOT NULL,
    device TEXT NOT NULL,
    kind TEXT NOT NULL,
    grp TEXT,
    zone TEXT,
    since DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (gateway, device)
);

CREATE TABLE history_notifications (
    gateway TEXT NOT NULL,
    id BIGINT NOT NULL,
    alert_id TEXT NOT NULL,
    n INTEGER NOT NULL,
    step INTEGER NOT NULL,
    responder TEXT NOT NULL,
    role TEXT NOT NULL,
    channel TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT,
    due DOUBLE PRECISION NOT NULL,
    queued DOUBLE PRECISION NOT NULL,
    handed DOUBLE PRECISION,
    delivered DOUBLE PRECISION,
    failed DOUBLE PRECISION,
    PRIMARY KEY (gateway, id)
);
