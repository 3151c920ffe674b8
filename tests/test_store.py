"""The SQLite store: outbox order and quota (a running total), inbound redelivery filter, dead
letters, the key/value table. Durability (sync, group commit, crashes): test_store_durability.py."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.store.db import Store
from edge_agent.store.inbox import Inbox
from edge_agent.store.outbox import ALERT_PRIORITY, EVENT_PRIORITY, TELEMETRY_PRIORITY


def test_quota_evicts_oldest_telemetry_first_and_never_an_alert(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite3", quota_bytes=20_000)
    try:
        with store.transaction():
            for i in range(50):
                store.outbox.enqueue("north", "alert", b"A" * 200, priority=ALERT_PRIORITY, now=i)
            for i in range(300):
                store.outbox.enqueue("north", f"tel/{i}", b"T" * 100, priority=TELEMETRY_PRIORITY, now=i)
            store.outbox.enforce_quota()
        pending = store.outbox.pending("north", limit=1000)
        alerts = [m for m in pending if m.priority == ALERT_PRIORITY]
        telemetry = [m for m in pending if m.priority == TELEMETRY_PRIORITY]
        assert len(alerts) == 50, "alerts are never evicted"
        assert store.outbox.outbox_bytes() <= 20_000
        assert telemetry and telemetry[-1].topic == "tel/299", "the newest telemetry is kept"
        assert telemetry[0].topic == f"tel/{300 - len(telemetry)}", "the oldest went first"
        assert store.counters.all()["outbox.evicted"] == 300 - len(telemetry)
        assert pending[: len(alerts)] == alerts, "alerts go out before any telemetry"
    finally:
        store.close()


def test_a_quota_full_of_alerts_keeps_every_alert(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite3", quota_bytes=1_000)
    try:
        with store.transaction():
            for i in range(40):
                store.outbox.enqueue("north", "alert", b"A" * 100, priority=ALERT_PRIORITY, now=i)
            store.outbox.enqueue("north", "event", b"E" * 100, priority=EVENT_PRIORITY, now=41)
            assert store.outbox.enforce_quota() == 0
        assert len(store.outbox.pending("north", limit=100)) == 41
    finally:
        store.close()


def test_redelivery_filter_remembers_and_forgets(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite3")
    try:
        with store.transaction():
            assert store.inbox.first_time("w1", 7, now=100.0)
            assert not store.inbox.first_time("w1", 7, now=101.0)
            assert store.inbox.first_time("w2", 7, now=101.0)
            store.inbox.prune(older_than=100.5)
            assert store.inbox.first_time("w1", 7, now=200.0), "forgotten after pruning"
    finally:
        store.close()


# ----- quota: a running total instead of a scan every 64 enqueues ----------------------------
def test_the_quota_holds_after_every_enqueue_not_every_64th(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite3", quota_bytes=1_000)
    try:
        for i in range(11):  # each outside a transaction: each commits by itself
            store.outbox.enqueue("north", f"tel/{i}", b"T" * 100, priority=TELEMETRY_PRIORITY, now=i)
            assert store.outbox.outbox_bytes() <= 1_000
        assert store.outbox.pending("north", limit=20)[0].topic == "tel/1"
        assert store.counters.all()["outbox.evicted"] == 1
        assert store.outbox.queued_bytes == store.outbox.outbox_bytes() == 1_000
    finally:
        store.close()


def test_the_running_total_is_read_from_the_database_at_open(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite3")
    with store.transaction():
        store.outbox.enqueue("north", "a", b"A" * 300, priority=ALERT_PRIORITY, now=1)
        store.outbox.enqueue("south", "t", b"T" * 77, priority=TELEMETRY_PRIORITY, now=2)
    store.close()
    store = Store(tmp_path / "s.sqlite3", quota_bytes=350)
    try:
        assert store.outbox.queued_bytes == 377
        store.outbox.enqueue("south", "t2", b"T" * 10, priority=TELEMETRY_PRIORITY, now=3)
        assert [m.topic for m in store.outbox.pending("south")] == ["t2"], (
            "the oldest telemetry went, on the other link"
        )
        assert store.outbox.queued_bytes == store.outbox.outbox_bytes() == 310
    finally:
        store.close()


def test_a_failed_commit_restores_the_running_total(tmp_path: Path) -> None:
    """A deferred foreign key makes COMMIT itself fail: the transaction is rolled back and so is
    its change of the running total."""
    store = Store(tmp_path / "s.sqlite3")
    try:
        store.db.execute("PRAGMA foreign_keys=ON")
        store.db.execute("CREATE TEMP TABLE parent (id INTEGER PRIMARY KEY)")
        store.db.execute("CREATE TEMP TABLE child (p INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)")
        store.outbox.enqueue("north", "kept", b"K" * 10, priority=EVENT_PRIORITY, now=0)

        def commit_fails() -> None:
            with store.transaction():
                store.outbox.enqueue("north", "lost", b"L" * 500, priority=EVENT_PRIORITY, now=1)
                store.db.execute("INSERT INTO child (p) VALUES (42)")  # fails at COMMIT

        with pytest.raises(sqlite3.IntegrityError):
            commit_fails()
        assert not store.db.in_transaction
        assert [m.topic for m in store.outbox.pending("north")] == ["kept"]
        assert store.outbox.queued_bytes == store.outbox.outbox_bytes() == 10
    finally:
        store.close()


_op = st.one_of(
    st.tuples(
        st.just("enqueue"),
        st.sampled_from(["north", "south"]),
        st.sampled_from([ALERT_PRIORITY, EVENT_PRIORITY, TELEMETRY_PRIORITY, TELEMETRY_PRIORITY]),
        st.integers(0, 400),
        st.booleans(),  # inside a transaction
    ),
    st.tuples(st.just("deliver"), st.sampled_from(["north", "south"]), st.integers(0, 8)),
    st.tuples(st.just("rollback"), st.integers(0, 5), st.integers(0, 400)),
    st.tuples(st.just("quota"), st.integers(200, 3_000)),
)


def _rolled_back(store: Store, count: int, size: int, victims: list[int], now: float) -> None:
    """Enqueue, deliver and evict in one transaction that then raises."""
    with store.transaction():
        for i in range(count):
            store.outbox.enqueue("south", "r", bytes(size), priority=TELEMETRY_PRIORITY, now=now + i)
        store.outbox._delete(victims)  # as delivered() does, but inside this transaction
        store.outbox.enforce_quota()
        assert store.outbox.queued_bytes == store.outbox.outbox_bytes()
        raise ZeroDivisionError


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_op, max_size=40))
def test_the_running_total_always_equals_the_sum_of_payloads(ops: list[tuple[Any, ...]]) -> None:
    store = Store(":memory:", quota_bytes=2_000)
    try:
        for n, op in enumerate(ops):
            if op[0] == "enqueue":
                _, link, priority, size, in_tx = op
                if in_tx:
                    with store.transaction():
                        store.outbox.enqueue(link, "t", bytes(size), priority=priority, now=n)
                        assert store.outbox.queued_bytes == store.outbox.outbox_bytes(), "inside the transaction too"
                else:
                    store.outbox.enqueue(link, "t", bytes(size), priority=priority, now=n)
            elif op[0] == "deliver":
                _, link, count = op
                store.outbox.delivered([m.seq for m in store.outbox.pending(link, limit=count)])
            elif op[0] == "rollback":
                _, count, size = op
                victims = [m.seq for m in store.outbox.pending("north", limit=count)]
                with pytest.raises(ZeroDivisionError):
                    _rolled_back(store, count, size, victims, n)
            else:
                store.outbox.quota_bytes = op[1]
                store.outbox.enforce_quota()
            assert store.outbox.queued_bytes == store.outbox.outbox_bytes()
            telemetry = store.db.execute("SELECT COUNT(*) FROM outbox WHERE priority = 2").fetchone()[0]
            assert store.outbox.outbox_bytes() <= store.outbox.quota_bytes or telemetry == 0, (
                "over quota with telemetry left"
            )
    finally:
        store.close()


# ----- dead letters and the key/value table --------------------------------------------------
def test_dead_letters_round_trip_newest_first_and_survive_reopen(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite3")
    with store.transaction():
        store.inbox.dead_letter("gw/wearable/W1/event", b"\x00\xffraw", "KeyError: 'zone'", now=10.0)
        store.inbox.dead_letter("gw/lamp/L1/state", b"{}", "x" * 10_000, now=11.0)

    def rolled_back() -> None:
        with store.transaction():
            store.inbox.dead_letter("rolled/back", b"", "nope", now=12.0)
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        rolled_back()
    store.close()
    store = Store(tmp_path / "s.sqlite3")
    try:
        letters = store.inbox.dead_letters()
        assert [d["topic"] for d in letters] == ["gw/lamp/L1/state", "gw/wearable/W1/event"]
        assert letters[1]["payload"] == b"\x00\xffraw"
        assert isinstance(letters[1]["payload"], bytes)
        assert letters[1]["error"] == "KeyError: 'zone'"
        assert letters[1]["ts"] == 10.0
        assert len(letters[0]["error"]) == Inbox.DEAD_LETTER_ERROR_CHARS
        assert len(store.inbox.dead_letters(limit=1)) == 1
    finally:
        store.close()


def test_dead_letters_keep_the_newest_thousand(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite3")
    try:
        with store.transaction():
            for i in range(Inbox.DEAD_LETTERS_KEEP + 7):
                store.inbox.dead_letter(f"t/{i}", b"p", "e", now=float(i))
        count = store.db.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0]
        assert count == Inbox.DEAD_LETTERS_KEEP
        letters = store.inbox.dead_letters(limit=5_000)
        assert letters[0]["topic"] == f"t/{Inbox.DEAD_LETTERS_KEEP + 6}"
        assert letters[-1]["topic"] == "t/7", "the oldest seven went"
    finally:
        store.close()


def test_meta_round_trip_rollback_and_reopen(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite3")
    assert store.meta.get("dongle.boot_nonce") is None
    with store.transaction():
        store.meta.set("dongle.boot_nonce", "1a2b")
    with store.transaction():
        store.meta.set("dongle.boot_nonce", "3c4d")
        store.meta.set("other", "")

    def rolled_back() -> None:
        with store.transaction():
            store.meta.set("dongle.boot_nonce", "lost")
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        rolled_back()
    assert store.meta.get("dongle.boot_nonce") == "3c4d"
    store.close()
    store = Store(tmp_path / "s.sqlite3")
    try:
        assert store.meta.get("dongle.boot_nonce") == "3c4d"
        assert store.meta.get("other") == ""
    finally:
        store.close()


# ----- batches: many transactions, one COMMIT ---------------------------------------------------


def test_a_batch_commits_its_transactions_together_and_a_failed_one_alone_rolls_back(tmp_path: Path) -> None:
    store = Store(tmp_path / "gw.sqlite3")
    store.begin_batch()
    with store.transaction(durable=False):
        store.outbox.enqueue("south", "t/1", b"a" * 10, priority=EVENT_PRIORITY, now=1.0)

    def a_message_that_breaks_the_agent() -> None:
        with store.transaction(durable=True):
            store.outbox.enqueue("south", "t/2", b"b" * 20, priority=ALERT_PRIORITY, now=2.0)
            raise RuntimeError("this message breaks the agent")

    with pytest.raises(RuntimeError):
        a_message_that_breaks_the_agent()
    with store.transaction(durable=False):
        store.outbox.enqueue("south", "t/3", b"c" * 30, priority=EVENT_PRIORITY, now=3.0)
    # nothing is visible to another connection before the batch commits
    other = sqlite3.connect(tmp_path / "gw.sqlite3")
    assert other.execute("SELECT COUNT(*) FROM outbox").fetchone() == (0,)
    assert store.commit_batch() is False, "no durable transaction survived in the batch"
    assert sorted(t for (t,) in other.execute("SELECT topic FROM outbox")) == ["t/1", "t/3"]
    assert store.outbox.queued_bytes == 40 == store.outbox.outbox_bytes()
    other.close()
    store.close()


def test_a_batch_is_durable_when_one_of_its_transactions_is(tmp_path: Path) -> None:
    store = Store(tmp_path / "gw.sqlite3")
    store.begin_batch()
    with store.transaction(durable=False):
        store.outbox.enqueue("south", "t/1", b"x", priority=TELEMETRY_PRIORITY, now=1.0)
    with store.transaction(durable=True):
        store.outbox.enqueue("south", "t/2", b"y", priority=ALERT_PRIORITY, now=1.0)
    assert store.commit_batch() is True
    assert not store.in_batch and store.commit_batch() is False, "nothing open: nothing to commit"
    store.close()


def test_a_store_written_before_the_device_state_rename_keeps_its_rows(tmp_path: Path) -> None:
    """Stores from before the rename hold the devices' desired/reported state in a table named
    ``shadow``; opening one renames it and keeps every row (edge-agent rollout status reads it)."""
    path = tmp_path / "gw.sqlite3"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE shadow (device TEXT PRIMARY KEY, desired TEXT NOT NULL DEFAULT '{}',"
        " reported TEXT NOT NULL DEFAULT '{}', updated REAL NOT NULL DEFAULT 0)"
    )
    old.execute("INSERT INTO shadow VALUES ('lamp-1', '{\"level\": 80}', '{\"policy_version\": 3}', 5.0)")
    old.commit()
    old.close()
    store = Store(path)
    assert store.device_state.all() == {"lamp-1": ({"level": 80}, {"policy_version": 3})}
    tables = {row[0] for row in store.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "shadow" not in tables
    store.close()
