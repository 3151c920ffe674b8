"""The SQLite store: outbox order and quota, inbound redelivery filter."""

from __future__ import annotations

from pathlib import Path

from edge_agent.store.db import ALERT_PRIORITY, EVENT_PRIORITY, TELEMETRY_PRIORITY, Store


def test_quota_evicts_oldest_telemetry_first_and_never_an_alert(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite3", quota_bytes=20_000)
    try:
        with store.transaction():
            for i in range(50):
                store.enqueue("north", "alert", b"A" * 200, priority=ALERT_PRIORITY, now=i)
            for i in range(300):
                store.enqueue("north", f"tel/{i}", b"T" * 100, priority=TELEMETRY_PRIORITY, now=i)
            store.enforce_quota()
        pending = store.pending("north", limit=1000)
        alerts = [m for m in pending if m.priority == ALERT_PRIORITY]
        telemetry = [m for m in pending if m.priority == TELEMETRY_PRIORITY]
        assert len(alerts) == 50, "alerts are never evicted"
        assert store.outbox_bytes() <= 20_000
        assert telemetry and telemetry[-1].topic == "tel/299", "the newest telemetry is kept"
        assert telemetry[0].topic == f"tel/{300 - len(telemetry)}", "the oldest went first"
        assert store.counters()["outbox.evicted"] == 300 - len(telemetry)
        assert pending[: len(alerts)] == alerts, "alerts go out before any telemetry"
    finally:
        store.close()


def test_a_quota_full_of_alerts_keeps_every_alert(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite3", quota_bytes=1_000)
    try:
        with store.transaction():
            for i in range(40):
                store.enqueue("north", "alert", b"A" * 100, priority=ALERT_PRIORITY, now=i)
            store.enqueue("north", "event", b"E" * 100, priority=EVENT_PRIORITY, now=41)
            assert store.enforce_quota() == 0
        assert len(store.pending("north", limit=100)) == 41
    finally:
        store.close()


def test_redelivery_filter_remembers_and_forgets(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite3")
    try:
        with store.transaction():
            assert store.first_time("w1", 7, now=100.0)
            assert not store.first_time("w1", 7, now=101.0)
            assert store.first_time("w2", 7, now=101.0)
            store.prune_inbox(older_than=100.5)
            assert store.first_time("w1", 7, now=200.0), "forgotten after pruning"
    finally:
        store.close()
