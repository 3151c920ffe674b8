"""Issue 21: the gateways' history and health reach the centre's tables.

The gateway side is the real store (edge_agent/store) and the real shipping code
(edge_agent/agent/history_north.py, queueing through the real outbox with ``Outbound``'s own
``msg_id``/``seq`` stamping); the centre side is centre/history.py's handlers on SQLite and
PostgreSQL. The mirror is compared with the gateway's own tables, read with plain SQL."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from centre.db import Database, open_database
from centre.history import HANDLERS, HistoryError, store_health, store_history
from edge_agent.agent import topics
from edge_agent.agent.context import GatewayContext
from edge_agent.agent.history_north import COLUMNS, HistoryNorth
from edge_agent.agent.outbound import Outbound
from edge_agent.clock import ManualClock
from edge_agent.models import Event
from edge_agent.store.db import Store

T0 = 1_767_225_600.0  # 2026-01-01T00:00Z


def gateway(store: Store, name: str, clock: ManualClock) -> HistoryNorth:
    """A HistoryNorth on a real store, queueing through Outbound's own north stamping."""
    links = SimpleNamespace(uplink="north", north=object(), wake={"north": SimpleNamespace(set=lambda: None)})
    context = SimpleNamespace(gateway=name, store=store, clock=clock, links=links, active=SimpleNamespace(version=7))
    outbound = SimpleNamespace(gateway=name, store=store, clock=clock, links=links)

    def enqueue(topic: str, body: dict[str, Any], device: str, priority: int) -> None:
        Outbound._enqueue_north(cast(Outbound, outbound), topic, body, device, priority)

    return HistoryNorth(cast(GatewayContext, context), enqueue)


def deliver(store: Store, db: Database, now: float, *, twice: bool = False) -> list[dict[str, Any]]:
    """Drain the gateway's north outbox into the centre's handlers, as the ingest would
    (topic class from the topic, the gateway from the topic's root). ``twice``: each
    message delivered again (at-least-once)."""
    bodies = []
    for message in store.outbox.pending("north", limit=10_000):
        gw = message.topic.split("/")[2]
        match = topics.match(gw, message.topic)
        assert match is not None
        body = json.loads(message.payload)
        bodies.append(body)
        for _ in range(2 if twice else 1):
            with db.transaction() as tx:
                HANDLERS[match[0].name](tx, gw, body, now)
        with store.transaction():
            store.outbox.forget([message.seq])
    return bodies


def gateway_rows(path: Path, table: str) -> list[tuple[Any, ...]]:
    cols = COLUMNS[table]
    with sqlite3.connect(path) as db:
        return sorted(db.execute(f"SELECT {', '.join(cols)} FROM {table}").fetchall(), key=repr)


def centre_rows(db: Database, gw: str, table: str) -> list[tuple[Any, ...]]:
    cols = COLUMNS[table]
    rows = db.query(f"SELECT {', '.join(cols)} FROM history_{table} WHERE gateway = ?", (gw,))
    return sorted(rows, key=repr)


def wearable(device: str, name: str, ts: float) -> Event:
    return Event(device=device, kind="wearable", name=name, ts=ts, group="village")


def test_history_rows_reach_the_centre_once_and_follow_their_changes(database_url: str, tmp_path: Path) -> None:
    path = tmp_path / "gw.sqlite3"
    store = Store(path)
    clock = ManualClock(T0)
    store.history.install([("w1", "wearable", "village", None), ("l1", "lamp", "town", "square")], T0)
    north = gateway(store, "gw1", clock)
    db = open_database(database_url)
    # round 1: an incident, motion in the current hour, the uplink down, a notification queued
    with store.transaction():
        store.history.record(wearable("w1", "sos", T0 + 10))
        store.history.record(Event(device="c1", kind="camera", name="person", ts=T0 + 20, zone="square"))
        store.history.record_link("north", False, T0 + 30)
        store.db.execute(
            "INSERT INTO notifications (alert_id, n, step, responder, role, channel, target, state, due, queued)"
            " VALUES ('a1', 1, 0, 'doc', 'village_doctor', 'sms', '+1', 'queued', ?, ?)",
            (T0 + 40, T0 + 40),
        )
    assert north.ship() > 0
    first = deliver(store, db, T0 + 50, twice=True)
    assert {b["table"] for b in first} >= {"event_log", "motion_hourly", "link_log", "census", "notifications"}
    assert all(b["v"] == 1 and b["gateway"] == "gw1" and b["msg_id"] for b in first)
    assert north.ship() == 0  # nothing new: nothing sent again
    # round 2: the same hour counts more, the notification is delivered, the uplink is back,
    # and a new hour begins; after a restart of the gateway (a new HistoryNorth on a reopened store)
    with store.transaction():
        store.history.record(Event(device="c1", kind="camera", name="vehicle", ts=T0 + 60, zone="square"))
        store.db.execute("UPDATE notifications SET state = 'delivered', handed = ?, delivered = ?", (T0 + 45, T0 + 61))
        store.history.record_link("north", True, T0 + 70)
    store.close()
    store = Store(path)
    north = gateway(store, "gw1", clock)
    with store.transaction():
        store.history.record(Event(device="c1", kind="camera", name="person", ts=T0 + 3700, zone="square"))
        store.history.record(wearable("w1", "fall", T0 + 3710))
    assert north.ship() > 0
    deliver(store, db, T0 + 3800)
    for table in COLUMNS:
        assert centre_rows(db, "gw1", table) == gateway_rows(path, table), table
    motion = centre_rows(db, "gw1", "motion_hourly")
    assert [(m[0], m[2]) for m in motion] == [(T0, 2), (T0 + 3600, 1)]
    assert db.query("SELECT since FROM history_since WHERE gateway = 'gw1'") == [(T0,)]
    store.close()
    db.close()


def test_health_reports_depth_and_the_larger_outage_count(database_url: str, tmp_path: Path) -> None:
    store = Store(tmp_path / "gw.sqlite3")
    clock = ManualClock(T0)
    store.history.install([], T0)
    north = gateway(store, "gw2", clock)
    with store.transaction():
        for i in range(3):
            store.history.record_link("north", False, T0 + i)
            store.history.record_link("north", True, T0 + i + 0.5)
    assert north.ship() == 1  # the link_log rows: one message waiting
    assert len(store.outbox.pending("north")) == 1
    north.report_health()
    health = json.loads(store.outbox.pending("north")[-1].payload)
    assert health == {"v": 1, "gateway": "gw2", "ts": T0, "outbox": 1, "uplink_outages": 3, "policy_version": 7}
    assert store.outbox.pending("north")[-1].retain
    with open_database(database_url) as db:
        with db.transaction() as tx:
            tx.execute("INSERT INTO gateways (gateway, outages) VALUES ('gw2', 5)")  # the centre saw 5 last wills
            store_health(tx, "gw2", health, T0)
        assert db.query("SELECT outbox_depth, outages FROM gateways WHERE gateway = 'gw2'") == [(1, 5)]
        with db.transaction() as tx:
            store_health(tx, "gw2", {**health, "outbox": 0, "uplink_outages": 9}, T0 + 60)
        assert db.query("SELECT outbox_depth, outages FROM gateways WHERE gateway = 'gw2'") == [(0, 9)]
        with db.transaction() as tx:
            store_health(tx, "new-gw", health, T0)  # a gateway the centre had not seen yet
        assert db.query("SELECT outbox_depth, outages FROM gateways WHERE gateway = 'new-gw'") == [(1, 3)]
    store.close()


GOOD = {"v": 1, "table": "link_log", "since": T0, "columns": ["id", "ts", "link", "up"], "rows": [[1, T0, "north", 0]]}


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"v": 2}, "unsupported version"),
        ({"table": "outbox"}, "unknown table 'outbox'"),
        ({"columns": ["id", "ts"]}, "columns"),
        ({"rows": "x"}, "'rows' must be a list"),
        ({"rows": [[1, T0, "north"]]}, "row 0: expected a list of 4 values"),
        ({"rows": [[1, "soon", "north", 0]]}, "row 0, column ts: expected a number"),
        ({"rows": [[1.5, T0, "north", 0]]}, "column id: expected an integer"),
        ({"rows": [[1, T0, None, 0]]}, "column link: null"),
    ],
)
def test_bad_history_bodies_are_refused_with_what_and_where(change: dict[str, Any], says: str, tmp_path: Path) -> None:
    with open_database(f"sqlite:///{tmp_path / 'c.db'}") as db:
        with pytest.raises(HistoryError, match=says) as info, db.transaction() as tx:
            store_history(tx, "gw9", {**GOOD, **change}, T0)
        assert "gw9" in str(info.value)
        assert db.query("SELECT COUNT(*) FROM history_link_log") == [(0,)]  # nothing half-written
        with db.transaction() as tx:
            store_history(tx, "gw9", GOOD, T0)
        assert db.query("SELECT gateway, id, up FROM history_link_log") == [("gw9", 1, 0)]


def test_bad_health_bodies_are_refused(tmp_path: Path) -> None:
    with open_database(f"sqlite:///{tmp_path / 'c.db'}") as db, db.transaction() as tx:
        bad: list[tuple[dict[str, Any], str]] = [
            ({"v": 1, "outbox": "3", "uplink_outages": 0}, "outbox: expected a number"),
            ({"v": 1, "outbox": 3}, "uplink_outages: null"),
            ({"v": 1, "outbox": -1, "uplink_outages": 0}, "negative"),
        ]
        for body, says in bad:
            with pytest.raises(HistoryError, match=says):
                store_health(tx, "gw9", body, T0)


def test_a_notification_left_open_does_not_make_every_change_resend_the_ledger(tmp_path: Path) -> None:
    store = Store(tmp_path / "gw.sqlite3")
    store.history.install([], T0)
    north = gateway(store, "gw3", ManualClock(T0))
    add = (
        "INSERT INTO notifications (alert_id, n, step, responder, role, channel, target, state, due, queued)"
        " VALUES (?, 1, 0, 'doc', 'village_doctor', 'app', 'x', ?, ?, ?)"
    )
    with store.transaction():
        store.db.execute(add, ("old", "handed", T0, T0))  # the app's rows stay "handed"
    north.ship()

    def sent_ids() -> list[int]:
        ids = [
            row[0]
            for m in store.outbox.pending("north", limit=1000)
            for row in json.loads(m.payload)["rows"]
            if json.loads(m.payload)["table"] == "notifications"
        ]
        with store.transaction():
            store.outbox.forget([m.seq for m in store.outbox.pending("north", limit=1000)])
        return ids

    assert sent_ids() == [1]
    with store.transaction():  # two days later: a new one, then its delivery
        store.db.execute(add, ("new", "queued", T0 + 2 * 86400, T0 + 2 * 86400))
    north.ship()
    assert sent_ids() == [1, 2]  # the old one was still inside the window
    with store.transaction():
        store.db.execute("UPDATE notifications SET state = 'delivered', delivered = ? WHERE id = 2", (T0 + 2 * 86400,))
    north.ship()
    assert sent_ids() == [2]  # the old one settled: not sent again
    assert north.ship() == 0
    store.close()
