"""A store that refuses writes never ends the agent: it sounds the storage alarm, waits and
goes on where it was. The lock at start is real (another connection holds ``BEGIN EXCLUSIVE``
on the agent's database file, as a backup tool or an operator's sqlite3 shell would); the
outbox's refused write is injected, because a real lock cannot be timed to fall between a
publish and the write that forgets it."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from edge_agent.clock import ManualClock
from edge_agent.config import GatewayConfig
from tests.agent.harness import SOS_RULE, Observer, Village, eventually, running, write_gateway

T0 = 1_767_225_600.0  # 2026-01-01 08:00 in Asia/Shanghai: lamps off, nothing else happening


async def test_an_agent_started_while_another_process_holds_the_store_waits_alarms_and_then_serves(
    tmp_path: Path, village: Village, unique_id: str
) -> None:
    config = write_gateway(tmp_path, unique_id, village.port, SOS_RULE)
    async with running(config, ManualClock(T0), links=village.links):
        pass  # the database exists, as on any gateway that ran before
    locker = sqlite3.connect(config.data_dir / "gateway.sqlite3", isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    async with village.observing(f"district/v1/{unique_id}") as obs:
        started = asyncio.create_task(_serve_one_sos(config, village, obs))
        try:
            alarms = await eventually(lambda: obs.on("alarm"), timeout=20, what="the storage alarm")
            assert {a["reason"] for a in alarms} == {"storage"}
            assert "refuses writes" in alarms[0]["detail"]
            assert not started.done(), "the agent ended instead of waiting for the store"
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        pages = await asyncio.wait_for(started, 30)
    assert len({p["alert_id"] for p in pages}) == 1  # the SOS sent once the lock was gone: paged


async def _serve_one_sos(config: GatewayConfig, village: Village, obs: Observer) -> list[dict[str, Any]]:
    async with running(config, ManualClock(T0 + 60), timeout=60, links=village.links):
        await obs.publish("wearable/W1/event", {"event": "sos", "seq": 1})
        return await eventually(lambda: obs.on("responder/doc1/alert"), timeout=20, what="doc1 paged")


async def test_a_refused_write_after_a_publish_does_not_end_the_agent(
    tmp_path: Path, village: Village, unique_id: str
) -> None:
    config = write_gateway(tmp_path, unique_id, village.port, SOS_RULE)
    async with (
        village.observing(f"district/v1/{unique_id}") as obs,
        running(config, ManualClock(T0), links=village.links) as agent,
    ):
        outbox = agent.store.outbox
        real_forget = outbox.forget
        refusals: list[list[int]] = []

        def forget(seqs: list[int]) -> None:
            if len(refusals) < 2:  # the store refuses the outbox's bookkeeping twice
                refusals.append(list(seqs))
                raise sqlite3.OperationalError("database is locked")
            real_forget(seqs)

        outbox.forget = forget  # type: ignore[method-assign]
        await obs.publish("wearable/W1/event", {"event": "sos", "seq": 1})
        await eventually(lambda: len(refusals) == 2, timeout=20, what="two refused writes")
        await eventually(lambda: not outbox.pending("south"), timeout=20, what="the south outbox emptied")
        assert agent.stats.alarms["storage"] >= 2
        alarms = await eventually(lambda: obs.on("alarm"), what="the storage alarm on the local broker")
        assert any("outbox cannot write to the store" in a["detail"] for a in alarms)
        # the page was published again after each refusal: the doctor's app drops it by alert id
        pages = obs.on("responder/doc1/alert")
        assert len(pages) >= 1 and len({p["alert_id"] for p in pages}) == 1
