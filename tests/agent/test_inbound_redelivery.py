"""An inbound message whose effects cannot be stored is not acknowledged, comes back, and is
applied exactly once when the store works again: on the in-process bus, and end to end on real
Mosquitto (MQTT 5 persistent session: the broker redelivers on resume). The store's failure is
injected: a disk that refuses writes cannot be made real here without root-only tricks."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.clock import ManualClock
from tests.agent.harness import SOS_RULE, Village, eventually, running, write_gateway

T0 = 1_767_225_600.0  # 2026-01-01 08:00 in Asia/Shanghai: lamps off, nothing else happening


@pytest.mark.parametrize("village", ["in-process", "broker"], indirect=True)
async def test_a_message_that_could_not_be_stored_comes_again_and_raises_one_alert(
    tmp_path: Path, village: Village, unique_id: str, request: pytest.FixtureRequest
) -> None:
    if village.links is None and request.getfixturevalue("mqtt_broker").kind != "mosquitto":
        pytest.skip(
            "redelivery on session resume needs Mosquitto (amqtt's path is a local retry, tested in test_mqtt_link)"
        )
    config = write_gateway(tmp_path, unique_id, village.port, SOS_RULE)
    async with (
        village.observing(f"district/v1/{unique_id}") as obs,
        running(config, ManualClock(T0), links=village.links) as agent,
    ):
        store = agent.store
        real_transaction = store.transaction
        refusals: list[bool] = []

        @contextlib.contextmanager
        def failing(*, durable: bool = True) -> Iterator[sqlite3.Connection]:
            if durable and len(refusals) < 3:  # the disk refuses the SOS's commit three times
                refusals.append(durable)
                raise sqlite3.OperationalError("disk I/O error")
            with real_transaction(durable=durable) as db:
                yield db

        store.transaction = failing  # type: ignore[method-assign]
        await obs.publish("wearable/W1/event", {"event": "sos", "seq": 7})
        notified = await eventually(lambda: obs.on("responder/doc1/alert"), timeout=30, what="doc1 paged")
        assert len(refusals) == 3, "the message came back after each refusal"
        assert agent.stats.alarms["storage"] == 3  # each refusal sounded the local alarm
        alarms = await eventually(lambda: obs.on("alarm"), what="the alarm on the local broker")
        assert {alarm["reason"] for alarm in alarms} == {"storage"}
        # a marker published after it: once it is handled, the SOS can no longer come again
        await obs.publish("wearable/W1/event", {"event": "sos", "seq": 8})
        # doc1 is still asked about the SOS: the marker goes to the next free doctor, doc2
        await eventually(lambda: obs.on("responder/doc2/alert"), what="the marker's page")
        pages = obs.on("responder/doc1/alert") + obs.on("responder/doc2/alert")
        assert len({page["alert_id"] for page in pages}) == 2
        assert notified[0]["alert_id"] == pages[0]["alert_id"]
        assert len(store.alerts.newest()) == 2  # one alert per SOS: the redelivered one applied once
        assert agent.south is not None and agent.south.unhandled == 3
