"""Foreign topics: a device with its own topic schema drives the normal engine.

The shipped example (examples/peer/: the peer benchmark's rule contract) runs on a real
Mosquitto; the expected alerts are written out from the contract in
../shared/peers/nodered/README.md, not computed by our code.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import msgspec
import pytest

from edge_agent.clock import ManualClock, ScaledClock
from edge_agent.config import load_config
from edge_agent.config.foreign import parse_pattern
from edge_agent.errors import ConfigError
from edge_agent.transports.mqtt_client import NO_DELAY
from tests.agent.harness import eventually, running
from tests.conftest import BrokerInfo

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "peer"


def shipped_peer_gateway(tmp_path: Path, port: int) -> Path:
    """examples/peer/ with only the broker port and the data dir changed."""
    for name in ("gateway.toml", "policy.toml"):
        shutil.copy(EXAMPLE / name, tmp_path / name)
    path = tmp_path / "gateway.toml"
    text = path.read_text()
    text, n_url = re.subn(r'url = "mqtt://127\.0\.0\.1:18883"', f'url = "mqtt://127.0.0.1:{port}"', text)
    text, n_dir = re.subn(r'data_dir = "[^"]*"', 'data_dir = "var/{id}"', text)
    assert n_url == 1 and n_dir == 1, "the example's broker URL or data dir moved: update this test"
    path.write_text(text)
    return path


@contextlib.asynccontextmanager
async def alerts(host: str, port: int) -> AsyncIterator[tuple[aiomqtt.Client, list[tuple[str, Any]]]]:
    seen: list[tuple[str, Any]] = []
    ready = asyncio.Event()
    client_box: list[aiomqtt.Client] = []

    async def listen() -> None:
        async with aiomqtt.Client(host, port, socket_options=NO_DELAY) as client:
            client_box.append(client)
            await client.subscribe("alerts/#", qos=1)
            ready.set()
            async for message in client.messages:
                raw = message.payload if isinstance(message.payload, bytes) else b""
                seen.append((str(message.topic), msgspec.json.decode(raw)))

    task = asyncio.create_task(listen())
    await asyncio.wait_for(ready.wait(), 10)
    try:
        yield client_box[0], seen
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_the_shipped_peer_contract_runs_through_the_engine(tmp_path: Path, mqtt_broker: BrokerInfo) -> None:
    config = load_config(shipped_peer_gateway(tmp_path, mqtt_broker.port))
    # the contract's crafted events (the peer harness's correctness check) and, by hand, the
    # alerts it promises: exactly three, each {"alert", "device", "ts"} on alerts/<gateway>
    cases = [
        ("village/v03/wearable/w0003/event", b'{"type":"sos","ts":1001}'),
        ("village/v04/wearable/w0104/event", b'{"type":"hr","value":121,"ts":1002}'),
        ("village/v04/wearable/w0104/event", b'{"type":"hr","value":120,"ts":1003}'),
        ("village/v05/wearable/w0005/event", b'{"type":"hr","value":60,"ts":1004}'),
        ("village/v05/wearable/w0005/event", b'{"type":"fall","ts":1005}'),
        ("village/v06/wearable/w0006/status", b'{"type":"sos","ts":1006}'),
        ("village/v07/wearable/w0007/event", b'{"type":"sos","ts":1007,"extra":1}'),
    ]
    expected = [
        ("alerts/v03", {"alert": "sos", "device": "w0003", "ts": 1001}),
        ("alerts/v04", {"alert": "tachycardia", "device": "w0104", "ts": 1002}),
        ("alerts/v07", {"alert": "sos", "device": "w0007", "ts": 1007}),
    ]
    async with running(config, ScaledClock()) as agent, alerts(mqtt_broker.host, mqtt_broker.port) as (client, seen):
        for topic, payload in cases:
            await client.publish(topic, payload, qos=1)
        await eventually(lambda: len(seen) >= 3, what="three alerts")
        await asyncio.sleep(0.5)  # nothing else may follow
        assert sorted(seen, key=lambda s: s[1]["ts"]) == expected
        # the rules ran in the engine: traced like any rule
        traces = agent.active.engine.traces
        assert [t["actions"] for t in traces["hub-sos"]] == [["send alerts/v03"], ["send alerts/v07"]]
        assert [t["condition"]["result"] for t in traces["hub-tachycardia"]] == [True, False, False]

        # bad input on the foreign topic: rejected with a reason, the agent goes on
        await client.publish("village/v01/wearable/w0001/event", b"not json", qos=1)
        await client.publish("village/v01/wearable/w0001/event", b'{"value":3}', qos=1)  # no "type"
        await client.publish("village/v01/wearable/w0001/event", b'{"type":"sos","ts":1008}', qos=1)
        await eventually(lambda: len(seen) == 4, what="the SOS after the bad messages")
        assert seen[-1] == ("alerts/v01", {"alert": "sos", "device": "w0001", "ts": 1008})
        assert agent.stats.rejected["bad_payload"] == 2


async def test_a_foreign_sos_is_acknowledged_only_after_its_send_is_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edge_agent.agent.app import Agent
    from edge_agent.transports.link import SYNC

    agent = Agent(load_config(shipped_peer_gateway(tmp_path, 1)), ManualClock(1.8e9))  # never run
    try:
        synced_with: list[int] = []

        def synced() -> None:  # what the link's commit waits for: asked after the commit
            synced_with.append(len(agent.store.outbox.pending("south", limit=100)))

        monkeypatch.setattr(agent.store, "synced", synced)
        sos = ("village/v03/wearable/w0003/event", b'{"type":"sos","ts":5}')
        calm = ("village/v03/wearable/w0003/event", b'{"type":"hr","value":70,"ts":6}')
        assert await agent.intake.receive_south(*sos) == SYNC, "committed; the ack waits for the flush"
        assert [m.payload for m in agent.store.outbox.pending("south", limit=10)] == [
            b'{"alert":"sos","device":"w0003","ts":5}'
        ]
        assert await agent.intake.on_south(*calm) is True
        assert await agent.intake.on_south(*sos) is True
        # the calm reading is synced too (its rule may send; nothing was queued), the second SOS
        # only once its alert is in the outbox
        assert synced_with == [1, 2]
    finally:
        agent.store.close()
        agent.delivery.close()


@pytest.mark.parametrize(
    ("pattern", "topic", "bound"),
    [
        ("zigbee2mqtt/{device}", "zigbee2mqtt/kitchen", {"device": "kitchen"}),
        ("zigbee2mqtt/{device}", "zigbee2mqtt/kitchen/set", None),
        ("shellies/{device}/relay/#", "shellies/s1/relay/0/power", {"device": "s1"}),
        ("shellies/{device}/relay/#", "shellies/s1/relay", {"device": "s1"}),
        ("tele/+/{device}/SENSOR", "tele/x/plug3/SENSOR", {"device": "plug3"}),
        ("tele/+/{device}/SENSOR", "tele/x/plug3/STATE", None),
    ],
)
def test_patterns_bind_levels_like_an_mqtt_filter(pattern: str, topic: str, bound: dict[str, str] | None) -> None:
    assert parse_pattern(pattern).match(topic.split("/")) == bound


def test_a_pattern_is_an_mqtt_filter() -> None:
    assert parse_pattern("village/{gateway}/wearable/{device}/event").filter == "village/+/wearable/+/event"
    assert parse_pattern("shellies/{device}/relay/#").filter == "shellies/+/relay/#"


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ('topic = "a/#/b"', "'#' only as the last level"),
        ('topic = "a/x{device}"', "must be a whole level"),
        ('topic = "a//b"', "empty level"),
        ('topic = "district/v1/gw/#"', "the gateway's own"),
        ('topic = "a/{device}"\nfields = { v = "value" }\nevent = "{kind_of}"', "neither topic levels"),
    ],
)
def test_bad_foreign_topics_are_named_in_the_config_error(tmp_path: Path, section: str, message: str) -> None:
    path = shipped_peer_gateway(tmp_path, 1)
    text = path.read_text().rsplit("[[foreign_topics]]", 1)[0]
    event = "" if "event =" in section else 'event = "{type}"\n'
    path.write_text(text + f'[[foreign_topics]]\nname = "x"\nkind = "wearable"\n{event}{section}\n')
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert "foreign_topics[0]" in str(raised.value) and message in str(raised.value)


def test_a_send_topic_with_a_wildcard_is_refused_in_the_policy(tmp_path: Path) -> None:
    path = shipped_peer_gateway(tmp_path, 1)
    policy = tmp_path / "policy.toml"
    policy.write_text(policy.read_text().replace('topic = "alerts/{gateway}"', 'topic = "alerts/+"', 1))
    with pytest.raises(ConfigError, match=r"rules\[0\]\.then\[0\]\.topic: a topic to publish to has no wildcards"):
        load_config(path)


def test_the_village_acl_lets_the_gateway_read_its_foreign_topics_and_write_its_sends(tmp_path: Path) -> None:
    from edge_agent.cli.acl import south_acl

    acl = south_acl(load_config(shipped_peer_gateway(tmp_path, 1)))
    gateway_part = acl.split("user peer-bench\n", 1)[1].split("\n# ---", 1)[0]
    assert "topic read village/+/wearable/+/event\n" in gateway_part
    assert "topic write alerts/+\n" in gateway_part


def test_send_templates_keep_types_and_refuse_a_value_that_would_reshape_the_topic() -> None:
    from edge_agent.engine.rules import render_topic, render_value

    values = {"gateway": "v01", "device": "w7", "ts": 1002, "v": 36.6, "slash": "a/b", "empty": ""}
    assert render_value({"ts": "{ts}", "t": "at {ts}", "n": ["{v}", 3]}, values) == {
        "ts": 1002,
        "t": "at 1002",
        "n": [36.6, 3],
    }
    assert render_topic("alerts/{gateway}/{device}", values) == "alerts/v01/w7"
    for bad in ("alerts/{slash}", "alerts/{empty}"):
        with pytest.raises(ValueError, match="cannot be a topic level"):
            render_topic(bad, values)
    with pytest.raises(KeyError):
        render_value("{missing}", values)
