"""The hand-off rule of the intake, without a broker: a message is acknowledged only once what
it caused is committed (and, for a durable transaction, synced); a storage failure is not
acknowledged and raises the alarm; an internal error keeps the raw message as a dead letter.
First on the intake's handler alone, then through a link (an in-process bus)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from edge_agent.agent.app import Agent
from edge_agent.clock import ManualClock
from edge_agent.models import Event
from edge_agent.transports.inprocess import InProcessLink
from tests.agent.harness import SOS_RULE, eventually, in_process_village, running, write_gateway

T0 = datetime(2026, 1, 1, 8, 0, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()
GW = "intake-gw"
SOS = (f"district/v1/{GW}/wearable/W1/event", b'{"v":1,"event":"sos","seq":1}')
LAMP = (f"district/v1/{GW}/lamp/L1/state", b'{"v":1,"on":false,"level":0}')


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    agent = Agent(write_gateway(tmp_path, GW, 1, SOS_RULE), ManualClock(T0))  # never run: no broker
    try:
        yield agent
    finally:
        agent.store.close()
        agent.delivery.close()


@pytest.fixture
def syncs(agent: Agent, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Each wait for the disk (``Store.sync``, or ``Store.synced`` whose future the link
    awaits), with the number of outbox rows committed when it was asked for."""
    calls: list[int] = []

    def synced() -> None:
        calls.append(len(agent.store.outbox.pending("south", limit=1000)))

    async def sync() -> None:
        synced()

    monkeypatch.setattr(agent.store, "synced", synced)
    monkeypatch.setattr(agent.store, "sync", sync)
    return calls


async def test_a_durable_event_is_acknowledged_after_commit_and_sync(agent: Agent, syncs: list[int]) -> None:
    assert await agent.intake.on_south(*SOS) is True
    assert syncs == [1], "synced once, after the responder's alert was committed"
    assert await agent.intake.on_south(*LAMP) is True
    assert syncs == [1], "a lamp report is not durable: nothing to wait for"


async def test_commit_event_syncs_only_durable_events(agent: Agent, syncs: list[int]) -> None:
    await agent.commit_event(Event("L1", "lamp", "state", T0, "square", "village", {"on": False, "level": 0}))
    assert syncs == []
    await agent.commit_event(Event("W1", "wearable", "sos", T0, "lane", None, {}))
    assert syncs == [1]


async def test_a_storage_failure_is_not_acknowledged_and_sounds_the_alarm(
    agent: Agent, syncs: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(event: Event) -> Any:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(agent.engine, "handle", broken)
    assert await agent.intake.on_south(*SOS) is False
    assert agent.stats.alarms["storage"] == 1
    assert syncs == []


async def test_a_failing_sync_is_not_acknowledged(agent: Agent, monkeypatch: pytest.MonkeyPatch) -> None:
    def synced() -> asyncio.Future[None]:
        failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        failed.set_exception(OSError("fsync failed"))
        return failed

    monkeypatch.setattr(agent.store, "synced", synced)
    assert await agent.intake.on_south(*SOS) is False
    assert agent.stats.alarms["storage"] == 1


async def test_an_internal_error_keeps_the_message_as_a_dead_letter(
    agent: Agent, syncs: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    def bug(event: Event) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(agent.engine, "handle", bug)
    assert await agent.intake.on_south(*SOS) is True
    letters = agent.store.inbox.dead_letters()
    assert [(d["topic"], d["payload"]) for d in letters] == [SOS]
    assert "RuntimeError: a bug" in letters[0]["error"]
    assert agent.stats.rejected == {"internal": 1}
    assert len(syncs) == 1, "the dead letter is on disk before the ack"


async def test_an_internal_error_that_cannot_be_kept_is_not_acknowledged(
    agent: Agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    def bug(event: Event) -> Any:
        raise RuntimeError("a bug")

    def no_room(*args: Any) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(agent.engine, "handle", bug)
    monkeypatch.setattr(agent.store.inbox, "dead_letter", no_room)
    assert await agent.intake.on_south(*SOS) is False
    assert agent.stats.rejected == {}


# ----- the same rule through a link: the agent running on an in-process bus -------------------
# (the broker's own redelivery of what was not acknowledged: tests/agent/test_inbound_redelivery.py)


def south_link(agent: Agent) -> InProcessLink:
    assert isinstance(agent.south, InProcessLink)
    return agent.south


async def test_over_a_link_an_sos_is_acknowledged_only_once_its_alert_is_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    village = in_process_village()
    config = write_gateway(tmp_path, GW, village.port, SOS_RULE)
    clock = ManualClock(T0)
    async with village.observing(f"district/v1/{GW}") as obs, running(config, clock, links=village.links) as agent:
        link = south_link(agent)
        asked: list[asyncio.Future[None]] = []

        def synced() -> asyncio.Future[None] | None:
            if any(f.done() for f in asked):  # the disk has it: the outbox's own wait passes too
                return None
            asked.append(asyncio.get_running_loop().create_future())
            return asked[-1]

        monkeypatch.setattr(agent.store, "synced", synced)
        await obs.publish("wearable/W1/event", {"event": "sos", "seq": 1})
        await eventually(lambda: asked, what="the wait for the disk")
        assert agent.store.alerts.newest() and link.acknowledged == 0, "committed, not yet acknowledged"
        for future in asked:  # the intake's wait and, maybe, the outbox's (which holds the page)
            future.set_result(None)
        await eventually(lambda: link.acknowledged == 1, what="the acknowledgement")
        await eventually(lambda: obs.on("responder/doc1/alert"), what="doc1 paged")
