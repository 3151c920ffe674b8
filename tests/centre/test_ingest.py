"""Ingest on both databases, without a broker: every north class lands where a user reads it,
a redelivery counts once, a bad message is counted by reason and the next good one is taken."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from centre import ingest as ingest_module
from centre.db import Database, Tx, open_database
from centre.ingest import Ingest, RejectedError, register_handler
from centre.service import prune

T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC: an hour boundary
GW = "naxi-gw1"


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    with open_database(database_url) as opened:
        yield opened


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def feed(ingest: Ingest, *messages: tuple[str, Any]) -> None:
    """Take the messages and commit them as one batch."""
    for topic, body in messages:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        ingest.take(f"district/v1/{topic}", payload)
    ingest.flush(ingest.detach())


def lamp(msg_id: str, ts: float, energy: float, *, level: float = 80, power: float = 40, faults: int = 0) -> Any:
    return {
        "v": 1, "ts": ts, "on": level > 0, "level": level, "power_w": power, "energy_wh": energy,
        "faults": faults, "msg_id": msg_id, "seq": 1, "gateway": GW, "group": "village",
    }  # fmt: skip


def alert(msg_id: str, ts: float, status: str, responder: str | None = None) -> Any:
    return {
        "v": 1, "ts": ts, "alert_id": "A1", "gateway": GW, "device": "W1", "kind": "wearable", "priority": 1,
        "message": "sos from W1", "rule": "sos", "status": status, "responder": responder, "step": 0,
        "msg_id": msg_id, "seq": 1,
    }  # fmt: skip


def test_status_counts_each_online_to_offline_change(db: Database) -> None:
    clock = Clock()
    ingest = Ingest(db, "naxi", clock=clock)
    for text in (b"online", b"online", b"offline", b"offline", b"online", b"offline"):
        clock.now += 10
        feed(ingest, (f"{GW}/status", text))
    online, changed, last_seen, outages = db.query(
        "SELECT online, status_changed, last_seen, outages FROM gateways WHERE gateway = ?", (GW,)
    )[0]
    assert (online, outages) == (0, 2)  # online->offline twice; a repeated retained "offline" is no outage
    assert changed == T0 + 60 and last_seen == T0 + 60


def test_alert_latest_change_wins_and_an_old_redelivery_never_regresses(db: Database) -> None:
    ingest = Ingest(db, "naxi")
    feed(ingest, (f"{GW}/alert", alert("m1", T0, "notified", "doc1")))
    feed(ingest, (f"{GW}/alert", alert("m3", T0 + 30, "acknowledged", "doc1")))
    feed(ingest, (f"{GW}/alert", alert("m2", T0 + 10, "escalated", "doc2")))  # late, older
    row = db.query("SELECT status, responder, raised, updated FROM alerts WHERE alert_id = 'A1'")[0]
    assert row == ("acknowledged", "doc1", T0, T0 + 30)
    changes = db.query("SELECT msg_id, status FROM alert_changes ORDER BY ts")
    assert changes == [("m1", "notified"), ("m2", "escalated"), ("m3", "acknowledged")]
    assert json.loads(db.query("SELECT body FROM alert_changes WHERE msg_id = 'm2'")[0][0])["responder"] == "doc2"


def test_telemetry_rolls_up_energy_from_meter_deltas_per_hour_and_fault_episodes(db: Database) -> None:
    ingest = Ingest(db, "naxi")
    # meter: 1000 at :50, 1010 at :55 (+10, hour 0), 1030 at 1:05 (+20, hour 1), reset to 5 (no delta),
    # then 8 (+3, hour 1); faults 0, 4, 6 (same episode, grown), 0 (cleared), 1 (a new episode)
    feed(
        ingest,
        (f"{GW}/telemetry/lamp/L1", lamp("t1", T0 + 3000, 1000)),
        (f"{GW}/telemetry/lamp/L1", lamp("t2", T0 + 3300, 1010, level=50, power=60, faults=4)),
    )
    feed(
        ingest,
        (f"{GW}/telemetry/lamp/L1", lamp("t3", T0 + 3900, 1030, faults=6)),
        (f"{GW}/telemetry/lamp/L1", lamp("t4", T0 + 4000, 5, level=30)),
        (f"{GW}/telemetry/lamp/L1", lamp("t5", T0 + 4100, 8, faults=1)),
    )
    feed(ingest, (f"{GW}/telemetry/lamp/L1", lamp("t5", T0 + 4100, 8, faults=1)))  # a redelivery
    hours = db.query("SELECT hour, reports, energy_wh, level_sum, power_w_max, faults FROM lamp_hours ORDER BY hour")
    assert hours == [
        (int(T0), 2, 10.0, 130.0, 60.0, 4),
        (int(T0) + 3600, 3, 23.0, 190.0, 40.0, 7),
    ]
    assert db.query("SELECT lamp_group, energy_wh, faults, last_report FROM lamps") == [("village", 8.0, 1, T0 + 4100)]
    assert db.query("SELECT COUNT(*) FROM lamp_telemetry") == [(5,)]
    episodes = db.query("SELECT since, faults, cleared FROM lamp_faults ORDER BY since")
    assert episodes == [(T0 + 3300, 6, T0 + 4000), (T0 + 4100, 1, None)]


def test_policy_ack_rollout_shadow_and_events(db: Database) -> None:
    ingest = Ingest(db, "naxi", clock=lambda: T0 + 777.0)  # the centre's clock, not the gateway's ts
    feed(
        ingest,
        (f"{GW}/policy/ack", {"v": 1, "gateway": GW, "version": 3, "status": "rejected", "reason": "rollback"}),
        (f"{GW}/policy/ack", {"v": 1, "gateway": GW, "version": 4, "status": "accepted", "ts": T0}),
        (f"{GW}/rollout", {"v": 1, "gateway": GW, "policy_version": 4, "lamps": 12, "on_version": 11, "retries": 3}),
        (
            f"{GW}/shadow/report",
            {"v": 1, "gateway": GW, "candidate": "eco", "days": [{"day": "2026-01-01", "minutes": 1440}]},
        ),
        (f"{GW}/event/report/morning", {"v": 1, "msg_id": "e1", "rule": "r", "device": "L1"}),
    )
    assert db.query("SELECT version, status, reason, received FROM policy_acks ORDER BY version") == [
        (3, "rejected", "rollback", T0 + 777.0),
        (4, "accepted", None, T0 + 777.0),
    ]
    assert db.query("SELECT policy_version, lamps, lamps_on_version FROM gateways") == [(4, 12, 11)]
    (body,) = db.query(
        "SELECT body FROM shadow_reports WHERE gateway = ? AND candidate = 'eco' AND day = '2026-01-01'", (GW,)
    )[0]
    assert json.loads(body)["minutes"] == 1440
    assert ingest.stats.events[GW] == 1


def test_bad_messages_are_counted_by_reason_and_the_next_good_one_is_taken(db: Database) -> None:
    ingest = Ingest(db, "naxi")
    good = lamp("g1", T0, 5)
    feed(
        ingest,
        (f"{GW}/telemetry/lamp/L1", b"{not json"),
        (f"{GW}/telemetry/lamp/L1", b"{not json either"),
        (f"{GW}/telemetry/lamp/L1", {**good, "v": 2}),
        (f"{GW}/telemetry/lamp/L1", {k: v for k, v in good.items() if k != "level"}),
        (f"{GW}/telemetry/lamp/L1", {**good, "level": "high"}),
        (f"{GW}/alert", {**alert("a9", T0, "raised"), "gateway": "someone-else"}),
        (f"{GW}/whatever", {"v": 1}),
        (f"{GW}/status", b"maybe"),
        (f"{GW}/telemetry/lamp/L1", good),
    )
    feed(ingest, (f"{GW}/telemetry/lamp/L2", {**good, "msg_id": "g2"}))
    ingest.take("elsewhere/v1/x/status", b"online")
    ingest.flush(ingest.detach())
    rejects = {(r, c): n for r, c, n in db.query("SELECT reason, topic_class, count FROM rejects")}
    assert rejects == {
        ("bad_json", "telemetry/lamp"): 2,
        ("bad_version", "telemetry/lamp"): 1,
        ("schema", "telemetry/lamp"): 2,
        ("gateway_mismatch", "alert"): 1,
        ("unknown_class", "whatever"): 1,
        ("schema", "status"): 1,
        ("foreign_topic", "?"): 1,
    }
    detail = db.query("SELECT last_detail FROM rejects WHERE reason = 'schema' AND topic_class = 'telemetry/lamp'")[0][
        0
    ]
    assert "level" in detail and "high" not in detail  # where, never the value
    assert db.query("SELECT lamp FROM lamps ORDER BY lamp") == [("L1",), ("L2",)]


def test_a_registered_class_gets_its_messages_once(db: Database) -> None:
    got: list[tuple[str, dict[str, Any], float]] = []

    def health(tx: Tx, gateway: str, body: dict[str, Any], now: float) -> None:
        if body.get("cpu") is None:
            raise RejectedError("schema", "no cpu")
        got.append((gateway, body, now))
        tx.execute("UPDATE gateways SET outbox_depth = ? WHERE gateway = ?", (body["outbox"], gateway))

    before = ingest_module.HANDLERS.get("test-health")
    register_handler("test-health", health)
    try:
        clock = Clock()
        ingest = Ingest(db, "naxi", clock=clock)
        body = {"v": 1, "msg_id": "h1", "cpu": 0.5, "outbox": 7}
        feed(
            ingest,
            (f"{GW}/test-health", body),
            (f"{GW}/test-health", body),
            (f"{GW}/test-health", {"v": 1, "msg_id": "h2"}),
        )
        feed(ingest, (f"{GW}/test-health", body))
    finally:
        del ingest_module.HANDLERS["test-health"]
        assert before is None
    assert got == [(GW, body, T0)]
    assert db.query("SELECT outbox_depth FROM gateways") == [(7,)]
    assert db.query("SELECT count FROM rejects WHERE reason = 'schema' AND topic_class = 'test-health'") == [(1,)]


def test_retention_prunes_raw_telemetry_and_message_ids_but_keeps_roll_ups(db: Database) -> None:
    clock = Clock()
    ingest = Ingest(db, "naxi", clock=clock)
    feed(ingest, (f"{GW}/telemetry/lamp/L1", lamp("old", T0, 1)))
    clock.now = T0 + 20 * 86_400
    feed(ingest, (f"{GW}/telemetry/lamp/L1", lamp("new", clock.now, 2)))
    assert prune(db, 14, clock.now) == (1, 1)
    assert db.query("SELECT msg_id FROM lamp_telemetry") == [("new",)]
    assert db.query("SELECT msg_id FROM seen_messages") == [("new",)]
    assert db.query("SELECT COUNT(*) FROM lamp_hours") == [(2,)]
