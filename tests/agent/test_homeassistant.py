"""Home Assistant MQTT discovery (edge_agent/agent/homeassistant.py), opt-in per gateway.

On a real broker, a client acting as Home Assistant: it receives one retained device-discovery
config per device (and the gateway), well formed and naming only topics the gateway publishes
or subscribes; its birth message makes the gateway announce them again, once; switching a lamp
reaches the lamp as ``lamp/<id>/set`` through an engine override (traced, persisted); the
lamp's report comes back as the light's state; wearables and cameras show up as sensors.
The generated south ACL gives the gateway and a ``homeassistant`` user exactly what this
needs, proved on the shipped village broker config.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiomqtt
import msgspec
import pytest

from devtools.gateway_config import DEFAULT_POLICY, write_gateway_config
from edge_agent.agent import topics
from edge_agent.agent.homeassistant import discovery_configs, light_state, node_id
from edge_agent.cli import acl
from edge_agent.clock import ManualClock
from edge_agent.config import GatewayConfig, load_config
from edge_agent.errors import ConfigError
from edge_agent.transports.mqtt_client import NO_DELAY
from tests.agent.harness import eventually, running
from tests.conftest import BrokerInfo

T0 = datetime(2026, 1, 1, 8, 0, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()  # daytime: lamps off
PLATFORMS = {"light", "binary_sensor", "sensor", "event"}
TOPIC_KEYS = ("state_topic", "command_topic", "availability_topic")


def write_config(tmp_path: Path, gw: str, port: int, prefix: str, **extra: Any) -> GatewayConfig:
    path = write_gateway_config(
        tmp_path,
        gw,
        policy_text=DEFAULT_POLICY,
        south_url=f"mqtt://127.0.0.1:{port}",
        north_url="none",
        extra={"homeassistant": {"enabled": True, "prefix": prefix, **extra}},
    )
    return load_config(path)


# ----- Home Assistant, played by a plain MQTT client ---------------------------------------------


@dataclass
class Ha:
    prefix: str
    client: aiomqtt.Client
    messages: list[tuple[str, bytes, bool]] = field(default_factory=list)

    def configs(self) -> list[tuple[str, dict[str, Any]]]:
        found = []
        for topic, payload, _ in self.messages:
            if topic.startswith(self.prefix + "/device/") and topic.endswith("/config") and payload:
                found.append((topic, msgspec.json.decode(payload)))
        return found

    def on(self, topic: str) -> list[bytes]:
        return [payload for seen, payload, _ in self.messages if seen == topic]


@contextlib.asynccontextmanager
async def home_assistant(client: aiomqtt.Client, prefix: str, *filters: str) -> AsyncIterator[Ha]:
    ha = Ha(prefix, client)
    ready = asyncio.Event()

    async def listen() -> None:
        async with client:
            for topic in [*topics.ha_discovery_filters(prefix), *filters]:
                await client.subscribe(topic, qos=1)
            ready.set()
            async for message in client.messages:
                raw = message.payload if isinstance(message.payload, bytes) else b""
                ha.messages.append((str(message.topic), raw, bool(message.retain)))

    task = asyncio.create_task(listen())
    await asyncio.wait_for(ready.wait(), 10)
    try:
        yield ha
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def check_config(config: GatewayConfig, topic: str, body: dict[str, Any], subscribed: list[str]) -> None:
    """One discovery config as Home Assistant's device discovery reads it."""
    gw = config.id
    assert set(body) >= {"dev", "o", "cmps"}, body
    assert body["dev"]["ids"] and body["dev"]["name"], body
    assert body["o"]["name"] == "edge-agent" and body["o"]["sw"], body
    assert body["cmps"], body
    published = {topics.status(gw)}
    for lamp in config.file.lamps:
        published.add(topics.build_ha(gw, "ha_lamp_state", lamp=lamp.id))
    for wearable in config.file.wearables:
        published |= {
            topics.build_ha(gw, "ha_wearable_state", wearable=wearable.id),
            topics.build_ha(gw, "ha_wearable_event", wearable=wearable.id),
        }
    for camera in config.file.cameras:
        published.add(topics.build_ha(gw, "ha_camera_motion", camera=camera.id))
    for key in TOPIC_KEYS:
        if key in body:
            assert body[key] in published, (topic, key, body[key])
    for name, component in body["cmps"].items():
        assert component["p"] in PLATFORMS, (name, component)
        assert component["unique_id"], (name, component)
        for key in TOPIC_KEYS:
            if key == "command_topic" and key in component:
                assert any(_matches(f, component[key]) for f in subscribed), (name, component[key])
            elif key in component:
                assert component[key] in published, (name, key, component[key])
        if component["p"] == "light":
            assert component["schema"] == "json" and component["supported_color_modes"] == ["brightness"]
            assert component["brightness_scale"] == 100 and "command_topic" in component
        if component["p"] == "event":
            assert set(component["event_types"]) >= {"sos", "fall"}


def _matches(filter_: str, topic: str) -> bool:
    f_parts, t_parts = filter_.split("/"), topic.split("/")
    for i, part in enumerate(f_parts):
        if part == "#":
            return True
        if i >= len(t_parts) or part not in ("+", t_parts[i]):
            return False
    return len(f_parts) == len(t_parts)


# ----- without a broker ------------------------------------------------------------------------------


def test_off_by_default_and_the_prefix_is_checked(tmp_path: Path) -> None:
    path = write_gateway_config(tmp_path, "gw1", south_url="embedded", policy_text=DEFAULT_POLICY)
    settings = load_config(path).file.homeassistant
    assert not settings.enabled and settings.prefix == "homeassistant" and settings.override_minutes == 60
    for bad in ("ha/#", "a/+/b", "", "/ha", "ha/"):
        path = write_gateway_config(
            tmp_path, "gw1", south_url="embedded", policy_text=DEFAULT_POLICY, extra={"homeassistant": {"prefix": bad}}
        )
        with pytest.raises(ConfigError, match=r"homeassistant\.prefix"):
            load_config(path)


def test_the_classes_build_parse_and_bind_under_their_own_base() -> None:
    values = {"lamp": "L1", "wearable": "W1", "camera": "C1", "device": "gw1_lamp_L1"}
    names = [c.name for c in topics.HOMEASSISTANT_CLASSES]
    assert len(set(names)) == len(names) and not set(names) & set(topics.BY_NAME)
    for topic_class in topics.HOMEASSISTANT_CLASSES:
        levels = {name: values[name] for name in topic_class.levels}
        topic = topics.ha_build("gw1", "ha/v1", topic_class.name, **levels)
        base = "ha/v1/" if topic_class.outside_root else "district/v1/gw1/"
        assert topic.startswith(base), topic
        assert topics.ha_match("gw1", "ha/v1", topic) == (topic_class, levels)
        assert topics.match("gw1", topic) is None, "not a class of the main registry"
        assert _matches(topics.ha_bind(topic_class, "gw1", "ha/v1"), topic)
        if not topic_class.outside_root:
            assert topics.build_ha("gw1", topic_class.name, **levels) == topic
    assert topics.ha_discovery("ha/v1", "x") == "ha/v1/device/x/config"
    assert topics.ha_birth("ha/v1") == "ha/v1/status"
    assert topics.ha_subscriptions("gw1", "ha/v1") == [("ha/v1/status", 1), ("district/v1/gw1/ha/lamp/+/set", 1)]
    assert topics.ha_match("gw1", "ha/v1", "district/v1/gw1/lamp/L1/set") is None
    with pytest.raises(ValueError, match="prefix"):
        topics.build_ha("gw1", "ha_discovery", device="x")


def test_discovery_configs_are_well_formed_and_unique(tmp_path: Path) -> None:
    config = write_config(tmp_path, "gw.1", 1883, "homeassistant")
    configs = discovery_configs(config)
    devices = 1 + len(config.file.lamps) + len(config.file.wearables) + len(config.file.cameras)
    assert len(configs) == len({topic for topic, _ in configs}) == devices
    subscribed = [f for f, _ in topics.ha_subscriptions(config.id, "homeassistant")]
    unique_ids = []
    for topic, payload in configs:
        body = msgspec.json.decode(payload)
        check_config(config, topic, body, subscribed)
        assert topic.split("/")[2] == node_id(topic.split("/")[2]), "a discovery id is [A-Za-z0-9_-]"
        unique_ids += [c["unique_id"] for c in body["cmps"].values()]
    assert len(unique_ids) == len(set(unique_ids))
    assert light_state(True, 37.4) == {"state": "ON", "brightness": 37, "color_mode": "brightness"}
    assert light_state(True, 0)["state"] == light_state(False, 80)["state"] == "OFF"


def test_the_south_acl_grants_home_assistant_only_when_enabled(tmp_path: Path) -> None:
    config = write_config(tmp_path, "gw1", 1883, "ha")
    users = {user.name: user for user in acl.south_users(config)}
    ha = {rule.topic: rule.access for rule in users["homeassistant"].rules}
    assert ha == {
        "ha/device/+/config": "readwrite",  # reads the configs; clears one deleted in its UI
        "ha/status": "readwrite",  # its birth and will
        "district/v1/gw1/ha/lamp/+/state": "read",
        "district/v1/gw1/ha/lamp/+/set": "write",
        "district/v1/gw1/ha/wearable/+/state": "read",
        "district/v1/gw1/ha/wearable/+/event": "read",
        "district/v1/gw1/ha/camera/+/motion": "read",
        "district/v1/gw1/status": "read",
        "ha/+/+/config": "read",
        "ha/+/+/+/config": "read",
    }
    gateway = {rule.topic: rule.access for rule in users["gw1"].rules}
    assert gateway["ha/device/+/config"] == "write" and gateway["ha/status"] == "read"
    assert gateway["district/v1/gw1/ha/lamp/+/set"] == "read"
    assert gateway["district/v1/gw1/ha/lamp/+/state"] == "write"
    assert "district/v1/gw1/ha/lamp/+/state" not in {r.topic for r in users["L1"].rules}, "not the lamp's"
    assert "user homeassistant\n" in acl.south_acl(config)
    off = load_config(write_gateway_config(tmp_path / "off", "gw1", south_url="embedded", policy_text=DEFAULT_POLICY))
    assert "homeassistant" not in {user.name for user in acl.south_users(off)}
    assert not any("/ha/" in rule.topic for user in acl.south_users(off) for rule in user.rules)


# ----- on a real broker ----------------------------------------------------------------------------------


async def test_home_assistant_discovers_switches_and_sees_the_village(
    tmp_path: Path, mqtt_broker: BrokerInfo, unique_id: str
) -> None:
    prefix = f"ha-{unique_id}"  # the session broker is shared: a prefix of our own
    config = write_config(tmp_path, unique_id, mqtt_broker.port, prefix)
    gw = config.id
    devices = 1 + len(config.file.lamps) + len(config.file.wearables) + len(config.file.cameras)
    root = topics.root(gw)
    client = aiomqtt.Client(mqtt_broker.host, mqtt_broker.port, socket_options=NO_DELAY)
    lamp_client = aiomqtt.Client(mqtt_broker.host, mqtt_broker.port, socket_options=NO_DELAY)
    async with (
        home_assistant(client, prefix, f"{root}/#") as ha,
        lamp_client,
        running(config, ManualClock(T0)) as agent,
    ):
        assert agent.homeassistant is not None
        # 1. the retained configs, once at connect
        await eventually(lambda: len(ha.configs()) >= devices, what="the discovery configs")
        subscribed = [f for f, _ in agent.south.subscriptions] if agent.south else []
        for topic, body in ha.configs():
            check_config(config, topic, body, subscribed)
        assert len({t for t, _ in ha.configs()}) == devices
        # 2. Home Assistant's birth: announced again, exactly once
        await client.publish(topics.ha_birth(prefix), b"online", qos=1)
        await eventually(lambda: len(ha.configs()) >= 2 * devices, what="the configs after the birth")
        await client.publish(topics.ha_birth(prefix), b"offline", qos=1)  # its will: nothing to do
        await asyncio.sleep(0.5)
        assert len(ha.configs()) == 2 * devices and agent.homeassistant.announcements == 2, "no storm"
        # 3. switch L1 from Home Assistant: the lamp gets its level through the engine
        light = next(b["cmps"]["light"] for t, b in ha.configs() if "light" in b["cmps"] and "_L1" in t)
        await client.publish(light["command_topic"], b'{"state":"ON","brightness":37}', qos=1)

        def commands(lamp: str) -> list[dict[str, Any]]:  # what the lamp receives, after the resync
            decoded = [msgspec.json.decode(body) for body in ha.on(topics.lamp_set(gw, lamp))]
            return [c for c in decoded if c["reason"] != "resync"]

        await eventually(lambda: commands("L1"), what="lamp/L1/set")
        assert [(c["level"], c["reason"]) for c in commands("L1")] == [(37, "command:homeassistant")]
        trace = agent.engine.traces["homeassistant"][-1]
        assert trace["trigger"] == {"type": "command", "source": "homeassistant", "device": "L1"}
        assert trace["actions"] == ["set_lamp L1 level=37 for 3600s (1 lamps)"]
        timers = {t.timer_id: t for t in agent.store.timers.all()}
        assert timers["override:command:homeassistant:L1"].data["level"] == 37.0, "persisted: a restart keeps it"
        assert agent.engine.lighting.lamps["L1"].override_level == 37.0
        # 4. the lamp reports: Home Assistant sees it on, at 37
        state_topic = light["state_topic"]
        await lamp_client.publish(topics.build(gw, "lamp_state", lamp="L1"), b'{"v":1,"on":true,"level":37}', qos=1)
        states = await eventually(lambda: ha.on(state_topic), what="the light's state")
        assert msgspec.json.decode(states[-1]) == {"state": "ON", "brightness": 37, "color_mode": "brightness"}
        # ... and off
        await client.publish(light["command_topic"], b'{"state":"OFF"}', qos=1)
        await eventually(lambda: len(commands("L1")) == 2, what="the second lamp/L1/set")
        assert commands("L1")[-1]["level"] == 0
        # 5. wearables and cameras
        await lamp_client.publish(topics.build(gw, "wearable_vitals", wearable="W1"), b'{"v":1,"heart_rate":88}')
        await lamp_client.publish(topics.build(gw, "wearable_heartbeat", wearable="W1"), b'{"v":1,"battery":64}')
        await lamp_client.publish(topics.build(gw, "wearable_event", wearable="W1"), b'{"v":1,"event":"fall"}')
        await lamp_client.publish(topics.build(gw, "camera_event", camera="C1"), b'{"v":1,"detection":"motion"}')
        wearable_state = topics.build_ha(gw, "ha_wearable_state", wearable="W1")
        await eventually(lambda: len(ha.on(wearable_state)) >= 2, what="the wearable's state")
        assert msgspec.json.decode(ha.on(wearable_state)[-1]) == {"heart_rate": 88, "battery": 64}
        await eventually(lambda: ha.on(topics.build_ha(gw, "ha_wearable_event", wearable="W1")), what="the fall event")
        assert msgspec.json.decode(ha.on(topics.build_ha(gw, "ha_wearable_event", wearable="W1"))[-1]) == {
            "event_type": "fall"
        }
        await eventually(lambda: ha.on(topics.build_ha(gw, "ha_camera_motion", camera="C1")) == [b"ON"], what="motion")
        # 6. a bad command is rejected and counted, and the lamp is left alone
        before = len(commands("L1"))
        await client.publish(light["command_topic"], b'{"state":"DIM"}', qos=1)
        await client.publish(topics.build_ha(gw, "ha_lamp_set", lamp="nope"), b'{"state":"ON"}', qos=1)
        await eventually(lambda: agent.stats.rejected["schema"] and agent.stats.rejected["unknown_device"])
        assert len(commands("L1")) == before
        # clear what we left retained on the session broker
        for topic, _ in ha.configs()[:devices]:
            await client.publish(topic, b"", qos=1, retain=True)
        for topic in (state_topic, wearable_state):
            await client.publish(topic, b"", qos=1, retain=True)


async def test_an_override_from_home_assistant_reverts_to_the_program(
    tmp_path: Path, mqtt_broker: BrokerInfo, unique_id: str
) -> None:
    config = write_config(tmp_path, unique_id, mqtt_broker.port, f"ha-{unique_id}", override_minutes=5)
    clock = ManualClock(T0)
    async with (
        aiomqtt.Client(mqtt_broker.host, mqtt_broker.port, socket_options=NO_DELAY) as client,
        running(config, clock) as agent,
    ):
        await client.publish(topics.build_ha(unique_id, "ha_lamp_set", lamp="L2"), b'{"brightness":55}', qos=1)
        await eventually(lambda: agent.engine.lighting.lamps["L2"].level == 55.0, what="the override")
        await clock.advance(5 * 60 + 1)
        await eventually(lambda: agent.engine.lighting.lamps["L2"].level == 0.0, what="back to the program (day)")
        assert "override:command:homeassistant:L2" not in {t.timer_id for t in agent.store.timers.all()}


# ----- the generated south ACL on the shipped village broker ---------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tests.security.city import Pki

    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.mark.skipif(shutil.which("mosquitto") is None, reason="needs mosquitto")
async def test_the_generated_south_acl_lets_home_assistant_do_exactly_its_part(tmp_path: Path, pki: Any) -> None:
    from tests.security.village import NOT_AUTHORISED, VillageBroker, publish_code

    gw = f"gw{secrets.token_hex(4)}"
    broker = VillageBroker(tmp_path / "village", pki)
    password = secrets.token_urlsafe(18)
    path = write_gateway_config(
        tmp_path / "gw",
        gw,
        policy_text=DEFAULT_POLICY,
        south_url=f"mqtt://127.0.0.1:{broker.local_port}",
        south={"username": gw, "password": password, "reconnect_min": 0.2, "reconnect_max": 1.0},
        extra={"homeassistant": {"enabled": True}},
    )
    config = load_config(path)
    passwords = {user.name: secrets.token_urlsafe(18) for user in acl.south_users(config)}
    passwords[gw] = password
    broker.start(config, passwords)
    try:
        async with (
            home_assistant(
                broker.client("homeassistant"),
                "homeassistant",
                topics.build_ha(gw, "ha_lamp_state", lamp="+"),
                topics.build_ha(gw, "ha_wearable_state", wearable="+"),
                topics.status(gw),
            ) as ha,
            broker.client("L1") as lamp,
            running(config, ManualClock(T0)) as agent,
        ):
            await lamp.subscribe(topics.lamp_set(gw, "L1"), qos=1)
            devices = 1 + len(config.file.lamps) + len(config.file.wearables) + len(config.file.cameras)
            await eventually(lambda: len(ha.configs()) >= devices, what="the configs through the ACL")
            await eventually(lambda: ha.on(topics.status(gw)) == [b"online"], what="the gateway's status")
            south = agent.south
            assert south is not None
            assert not south.refused, south.refused
            assert await publish_code(ha.client, topics.ha_birth("homeassistant"), b"online") == 0
            await eventually(lambda: len(ha.configs()) >= 2 * devices, what="the configs after the birth")
            assert (
                await publish_code(ha.client, topics.build_ha(gw, "ha_lamp_set", lamp="L1"), b'{"brightness":42}') == 0
            )

            async def level() -> float:
                async for message in lamp.messages:
                    return float(
                        msgspec.json.decode(message.payload if isinstance(message.payload, bytes) else b"")["level"]
                    )
                raise AssertionError("no lamp command")

            assert await asyncio.wait_for(level(), 10) == 42.0
            body = b'{"v":1,"on":true,"level":42}'
            assert await publish_code(lamp, topics.build(gw, "lamp_state", lamp="L1"), body) == 0
            await eventually(
                lambda: ha.on(topics.build_ha(gw, "ha_lamp_state", lamp="L1")), what="the state through the ACL"
            )
            # Home Assistant cannot go around the engine, nor speak for the gateway or a device
            for topic in (
                topics.lamp_set(gw, "L1"),
                topics.build_ha(gw, "ha_lamp_state", lamp="L1"),
                topics.build(gw, "lamp_state", lamp="L1"),
                topics.status(gw),
                topics.policy(gw),
            ):
                assert await publish_code(ha.client, topic, b"{}") == NOT_AUTHORISED, topic
            # ... and a lamp cannot command another lamp through Home Assistant's topics
            assert (
                await publish_code(lamp, topics.build_ha(gw, "ha_lamp_set", lamp="L2"), b'{"state":"ON"}')
                == NOT_AUTHORISED
            )
            assert not south.refused, south.refused
    finally:
        broker.stop()


def test_docs_topics_md_lists_exactly_the_home_assistant_classes() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "TOPICS.md").read_text()
    section = text.split("\n## Home Assistant")[1].split("\n## ")[0]
    rows = re.findall(r"^\| `([^`]+)` \|", section, re.MULTILINE)
    shown = [("<prefix>/" if c.outside_root else "") + c.display for c in topics.HOMEASSISTANT_CLASSES]
    assert sorted(rows) == sorted(shown)
