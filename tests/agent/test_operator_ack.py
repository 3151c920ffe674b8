"""The district centre's operator acknowledges an alert (``command/ack`` on the north link):
the gateway takes it for the responder it waits for, and the escalation stops."""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from edge_agent.clock import ManualClock
from tests.agent.harness import SOS_RULE, Village, eventually, running, write_gateway

T0 = datetime(2026, 1, 1, 8, 0, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()


@pytest.mark.parametrize("village", ["in-process", "broker"], indirect=True)
async def test_operator_ack_stops_the_escalation(
    tmp_path: Path, village: Village, unique_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edge_agent")
    config = write_gateway(tmp_path, unique_id, village.port, SOS_RULE)
    clock = ManualClock(T0)
    async with (
        village.observing(f"district/v1/{unique_id}") as obs,
        running(config, clock, links=village.links) as agent,
    ):
        await obs.publish("wearable/W1/event", {"event": "sos"})
        first = await eventually(lambda: obs.on("responder/doc1/alert"), what="doc1 notified")
        alert_id = first[0]["alert_id"]
        await obs.publish("command/ack", {"alert_id": alert_id, "by": "operator:ana"})
        acked = await eventually(
            lambda: [a for a in obs.on("alert") if a["status"] == "acknowledged"], what="acknowledged north"
        )
        assert acked[0]["responder"] == "doc1"  # on behalf of the responder it waited for
        await clock.advance(600)  # past doc1's ack timeout (120 s): nobody else is called
        assert not obs.on("responder/doc2/alert")
        stored = agent.store.alerts.get(alert_id)
        assert stored is not None and stored.status == "acknowledged" and stored.responder == "doc1"
        assert any("operator:ana" in r.getMessage() and alert_id in r.getMessage() for r in caplog.records)


async def test_operator_ack_for_an_unknown_or_bad_alert_changes_nothing(tmp_path: Path, unique_id: str) -> None:
    from tests.agent.harness import in_process_village

    village = in_process_village()
    config = write_gateway(tmp_path, unique_id, village.port, SOS_RULE)
    clock = ManualClock(T0)
    async with (
        village.observing(f"district/v1/{unique_id}") as obs,
        running(config, clock, links=village.links) as agent,
    ):
        await obs.publish("command/ack", b"not json")
        await obs.publish("command/ack", {"alert_id": "nope", "by": "operator:ana"})
        await obs.publish("wearable/W1/event", {"event": "sos"})
        await eventually(lambda: obs.on("responder/doc1/alert"), what="doc1 notified")
        await clock.advance(120)  # the bad commands did not take it: it escalates as usual
        await eventually(lambda: obs.on("responder/doc2/alert"), what="escalation to doc2")
        assert agent.stats.rejected["bad_operator_ack"] == 1
