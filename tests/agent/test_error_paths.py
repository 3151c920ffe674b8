"""Error paths that must not swallow an SOS nor let memory run ahead of the store (issue 23).

A real agent on the in-process bus with a real SQLite store. What is injected, and why, is said
in each test: a bug in a rule cannot be made real without shipping one, and a COMMIT that fails
is made real by SQLite itself (an authorizer that denies the next COMMIT statement)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from edge_agent.clock import ManualClock
from edge_agent.engine.rules import CompiledRule
from edge_agent.models import Event
from edge_agent.store.walsync import THREAD_NAME
from tests.agent.harness import SOS_RULE, T0, Village, eventually, running, write_gateway

REAL_FSYNC = os.fsync

LAMP_FAULT_RULE = """
[[rules]]
id = "lamp-fault"
when = { trigger = "event", event = "fault", kind = "lamp" }
then = [ { action = "alert", priority = 3, message = "lamp {device} fault" } ]
"""


def deny_next_commit(db: sqlite3.Connection, denied: list[str]) -> None:
    """Make SQLite refuse the next COMMIT (SQLITE_DENY from the authorizer: a real failed
    COMMIT, the transaction then rolled back by the store); later ones pass."""

    def authorizer(action: int, arg1: Any, *_: Any) -> int:
        if action == sqlite3.SQLITE_TRANSACTION and arg1 == "COMMIT" and not denied:
            denied.append(arg1)
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK

    db.set_authorizer(authorizer)


async def test_an_sos_whose_rule_raises_still_pages_the_first_doctor_and_sounds_the_alarm(
    tmp_path: Path, village: Village, unique_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bug is injected by replacing the engine's rule run (``Engine._run``) for the rule
    ``sos`` only: no action of the policy language raises at run time (the schema refuses what
    could), so a bug in a rule can only be simulated. The fallback path must not need that rule."""
    config = write_gateway(tmp_path, unique_id, village.port, SOS_RULE)
    async with (
        village.observing(f"district/v1/{unique_id}") as obs,
        running(config, ManualClock(T0), links=village.links) as agent,
    ):
        engine = agent.active.engine
        real_run = engine._run

        def failing_run(rule: CompiledRule, *args: Any, **kwargs: Any) -> Any:
            if rule.id == "sos":
                raise RuntimeError("a bug in the sos rule")
            return real_run(rule, *args, **kwargs)

        monkeypatch.setattr(engine, "_run", failing_run)
        await obs.publish("wearable/W1/event", {"event": "sos", "seq": 1})
        pages = await eventually(lambda: obs.on("responder/doc1/alert"), timeout=30, what="doc1 paged")
        assert pages[0]["device"] == "W1" and pages[0]["priority"] == 1
        alarms = await eventually(lambda: obs.on("alarm"), what="the local alarm")
        assert alarms[0]["reason"] == "internal" and "W1" in alarms[0]["detail"]
        [letter] = agent.store.inbox.dead_letters()
        assert "a bug in the sos rule" in letter["error"], "the raw SOS is kept for a human too"
        [alert] = agent.store.alerts.newest()
        assert (alert.chain, alert.responder, alert.status) == ("medical", "doc1", "notified")


async def test_another_message_whose_handling_raises_is_a_dead_letter_and_an_alarm(
    tmp_path: Path, village: Village, unique_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug injected in the engine's ``handle`` (nothing else can make it raise): a lamp
    report is kept, alarmed and raises no alert (it is no emergency)."""
    config = write_gateway(tmp_path, unique_id, village.port, SOS_RULE)
    async with (
        village.observing(f"district/v1/{unique_id}") as obs,
        running(config, ManualClock(T0), links=village.links) as agent,
    ):

        def bug(event: Event) -> Any:
            raise RuntimeError("a bug")

        monkeypatch.setattr(agent.active.engine, "handle", bug)
        await obs.publish("lamp/L1/state", {"on": False, "level": 0})
        alarms = await eventually(lambda: obs.on("alarm"), what="the local alarm")
        assert alarms[0]["reason"] == "internal"
        assert len(agent.store.inbox.dead_letters()) == 1
        assert agent.store.alerts.newest() == []


async def test_a_lamp_fault_whose_commit_failed_raises_its_alert_once_when_it_comes_again(
    tmp_path: Path, village: Village, unique_id: str
) -> None:
    config = write_gateway(tmp_path, unique_id, village.port, SOS_RULE + LAMP_FAULT_RULE)
    async with (
        village.observing(f"district/v1/{unique_id}") as obs,
        running(config, ManualClock(T0), links=village.links) as agent,
    ):
        denied: list[str] = []
        deny_next_commit(agent.store.db, denied)
        await obs.publish("lamp/L1/state", {"on": False, "level": 0, "faults": 4})
        alerts = await eventually(lambda: obs.on("alert"), timeout=30, what="the fault alert")
        assert denied == ["COMMIT"], "the first commit of the report failed"
        assert agent.stats.alarms["storage"] == 1
        # a marker after it: once it is handled, the report can no longer come again
        await obs.publish("wearable/W1/event", {"event": "sos", "seq": 1})
        await eventually(lambda: obs.on("responder/doc1/alert"), what="the marker's page")
        assert [a["rule"] for a in obs.on("alert") if a["status"] == "raised"] == ["lamp-fault"]
        assert [a.rule for a in agent.store.alerts.newest() if a.rule == "lamp-fault"] == ["lamp-fault"]
        assert alerts[0]["device"] == "L1"


async def test_an_sos_whose_commit_failed_pages_the_first_free_doctor_when_it_comes_again(
    tmp_path: Path, village: Village, unique_id: str
) -> None:
    """Dispatch's memory must not keep doc1 busy with the alert the failed commit dropped: the
    redelivered SOS goes to doc1 (the chain's first step), and nobody is paged twice."""
    config = write_gateway(tmp_path, unique_id, village.port, SOS_RULE)
    async with (
        village.observing(f"district/v1/{unique_id}") as obs,
        running(config, ManualClock(T0), links=village.links) as agent,
    ):
        denied: list[str] = []
        deny_next_commit(agent.store.db, denied)
        await obs.publish("wearable/W1/event", {"event": "sos", "seq": 1})
        await eventually(lambda: agent.store.alerts.newest(), timeout=30, what="the SOS's alert stored")
        await eventually(lambda: obs.on("responder/doc1/alert"), timeout=30, what="doc1 paged")
        assert denied == ["COMMIT"]
        [alert] = agent.store.alerts.newest()
        assert alert.responder == "doc1"
        assert obs.on("responder/doc2/alert") == []


async def test_no_responder_alert_is_published_before_the_fsync_that_keeps_it(
    tmp_path: Path, village: Village, unique_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The WAL's fsync is held (``os.fsync`` wrapped in the store's syncer thread only: a disk
    cannot be made slow on demand here) while an SOS arrives: its alert is committed, but no
    responder hears of it until the fsync returns. The absence is watched for a bounded second
    (what the old drain took a few ms to publish); then the fsync is let go and doc1 is paged."""
    config = write_gateway(tmp_path, unique_id, village.port, SOS_RULE)
    held = threading.Event()
    release = threading.Event()

    def slow_fsync(fd: int) -> None:
        if threading.current_thread().name == THREAD_NAME:
            held.set()
            release.wait(30)
        REAL_FSYNC(fd)

    async with (
        village.observing(f"district/v1/{unique_id}") as obs,
        running(config, ManualClock(T0), links=village.links) as agent,
    ):
        try:
            await agent.store.sync()  # what the start committed is on disk: the gate holds the SOS's
            monkeypatch.setattr(os, "fsync", slow_fsync)
            await obs.publish("wearable/W1/event", {"event": "sos", "seq": 1})
            await eventually(lambda: agent.store.alerts.newest(), what="the SOS's alert committed")
            await eventually(held.is_set, what="the fsync that covers it started")
            with contextlib.suppress(AssertionError):
                await eventually(lambda: obs.on("responder/doc1/alert"), timeout=1.0)
            assert obs.on("responder/doc1/alert") == [], "paged before the alert was on disk"
        finally:
            release.set()
        await eventually(lambda: obs.on("responder/doc1/alert"), timeout=30, what="doc1 paged once on disk")
