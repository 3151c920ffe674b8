"""The village (south) broker as shipped: deploy/mosquitto/south.conf with the ACL the generator
makes from a gateway file, on a real Mosquitto, clients speaking MQTT 5.

A device user may publish only its own topics and read only its own commands: a lamp cannot
publish as another lamp or as a wearable (PUBACK 0x87), cannot read residents' wearable data or
another device's commands (nothing arrives, proved before a marker), cannot publish a policy.
Checked on the shipped example gateways and on a test gateway; and what the broker has taken
survives a kill -9 of the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiomqtt
import msgspec
import pytest

from edge_agent.agent import topics
from edge_agent.agent.topics import TOPIC_CLASSES
from edge_agent.cli import acl
from edge_agent.clock import ManualClock
from edge_agent.config import GatewayConfig, load_config
from tests.agent.harness import T0, running
from tests.security.aclfile import sample
from tests.security.city import CENTRE, Pki, receiving
from tests.security.layout import Gateway, write_gateway
from tests.security.village import NOT_AUTHORISED, VillageBroker, publish_code

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.toml"))


@contextlib.contextmanager
def village(workdir: Path, pki: Pki, config: GatewayConfig, passwords: dict[str, str]) -> Iterator[VillageBroker]:
    broker = VillageBroker(workdir, pki).start(config, passwords)
    try:
        yield broker
    finally:
        broker.stop()


@contextlib.asynccontextmanager
async def gateway_listening(broker: VillageBroker, config: GatewayConfig) -> AsyncIterator[aiomqtt.Client]:
    """The gateway's own user on the loopback listener, subscribed as the agent subscribes."""
    uplink = not acl.shares_broker(config)
    async with broker.client(config.id, lan=False) as gateway:
        for topic, qos in topics.subscriptions(config.id, "south", uplink=uplink):
            await gateway.subscribe(topic, qos=qos)
        yield gateway


def someone_else(config: GatewayConfig, kind: str, me: str) -> str:
    """Another device of ``kind`` in the gateway file, else a made-up id."""
    others = [device for k, device in acl.devices(config) if k == kind and device != me]
    return others[0] if others else f"not-{me}"


@pytest.fixture
def layout(tmp_path: Path, pki: Pki, gateways: tuple[str, str]) -> Iterator[tuple[VillageBroker, Gateway]]:
    """A test gateway without uplink (so the policy travels over the village broker too)."""
    broker = VillageBroker(tmp_path / "village", pki)
    gateway = write_gateway(tmp_path / "gw", pki, gateways[0], broker.local_port)
    broker.start(gateway.config, gateway.passwords)
    try:
        yield broker, gateway
    finally:
        broker.stop()


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
async def test_every_device_publishes_its_own_topics_only_on_the_examples(
    tmp_path: Path, pki: Pki, example: Path
) -> None:
    """For every MQTT device of the shipped example: each class it publishes, under its own id,
    is taken (0) and reaches the gateway; the same class under another device's id, every class
    of another kind and everything the gateway or the centre publishes is refused (0x87)."""
    config = load_config(example)
    users = [user.name for user in acl.south_users(config)]
    passwords = {user: f"pw-{i}-{user}" for i, user in enumerate(users)}
    gw = config.id
    with village(tmp_path / "village", pki, config, passwords) as broker:
        async with gateway_listening(broker, config) as gateway, receiving(gateway) as received:
            expected: list[str] = []
            for kind, device in acl.devices(config):
                async with broker.client(device) as client:
                    forged: list[str] = []
                    for topic_class in TOPIC_CLASSES:
                        if topic_class.publisher == CENTRE and device == CENTRE:
                            continue  # a responder named centre is the district centre (checked below)
                        if topic_class.publisher == kind:
                            forged.append(sample(gw, topic_class, **{kind: someone_else(config, kind, device)}))
                        else:  # another kind's topic, or the gateway's or the centre's
                            forged.append(sample(gw, topic_class))
                    codes = {topic: await publish_code(client, topic, b"forged") for topic in forged}
                    assert codes == dict.fromkeys(forged, NOT_AUTHORISED), device
                    for topic_class in TOPIC_CLASSES:
                        if topic_class.publisher == kind:
                            own = sample(gw, topic_class, **{kind: device})
                            assert await publish_code(client, own, b"own") == 0, own
                            expected.append(own)
            for topic in expected:
                await received.wait_for(topic)
            assert sorted(received.topics()) == sorted(expected)
            assert all(payload == b"own" for _, payload in received.messages)
        # the centre publishes a policy here only when the gateway has no uplink of its own
        async with broker.client(CENTRE) as centre:
            code = await publish_code(centre, topics.policy(gw), b"signed bundle")
            assert code == (0 if acl.shares_broker(config) else NOT_AUTHORISED)


async def test_a_lamp_cannot_impersonate_other_devices_or_publish_a_policy(
    layout: tuple[VillageBroker, Gateway],
) -> None:
    broker, gateway = layout
    root = gateway.root
    forged = [
        f"{root}/lamp/L2/state",  # another lamp
        f"{root}/wearable/W1/event",  # a resident's SOS
        f"{root}/wearable/W1/vitals",
        f"{root}/wearable/W1/heartbeat",
        f"{root}/camera/C1/event",
        f"{root}/responder/doc1/ack",  # silencing an alert
        f"{root}/policy",  # even here, where the gateway takes its policy (no uplink)
        f"{root}/lamp/L1/set",  # commands come from the gateway, not from the lamp
        f"{root}/lamp/L2/set",
        f"{root}/responder/doc1/alert",  # paging a doctor
        f"{root}/alarm",
        f"{root}/status",
        f"{root}/alert",
        f"{root}/event/anything",
        "district/v1/other-gateway/lamp/L1/state",
        "elsewhere",
    ]
    async with (
        gateway_listening(broker, gateway.config) as gw,
        receiving(gw) as received,
        broker.client("L1") as lamp,
    ):
        for topic in forged:
            assert await publish_code(lamp, topic, b"forged by L1", retain=True) == NOT_AUTHORISED, topic
        assert await publish_code(lamp, f"{root}/lamp/L1/state", b"marker") == 0
        assert await received.wait_for(f"{root}/lamp/L1/state") == b"marker"
        assert received.topics() == [f"{root}/lamp/L1/state"]


async def test_a_device_reads_only_its_own_commands(layout: tuple[VillageBroker, Gateway]) -> None:
    """A lamp and a doctor's phone subscribe to everything they can think of; residents publish
    their data, the gateway commands another lamp, pages another doctor, raises an alarm, the
    centre delivers a policy: each of them receives only what is addressed to it."""
    broker, gateway = layout
    root = gateway.root
    async with (
        gateway_listening(broker, gateway.config) as gw,
        receiving(gw) as gw_saw,
        broker.client("L1") as lamp,
        receiving(lamp) as lamp_saw,
        broker.client("doc1") as phone,
        receiving(phone) as phone_saw,
        broker.client("W1") as hub,
        broker.client(CENTRE) as centre,
    ):
        for client in (lamp, phone):
            for pattern in ("#", f"{root}/#", f"{root}/wearable/#", f"{root}/responder/+/alert", f"{root}/lamp/+/set"):
                await client.subscribe(pattern, qos=1)
            await client.subscribe(f"{root}/policy", qos=1)
        residents = [f"{root}/wearable/W1/event", f"{root}/wearable/W1/vitals", f"{root}/wearable/W1/heartbeat"]
        for topic in residents:
            assert await publish_code(hub, topic, b"resident data") == 0
        assert await publish_code(centre, f"{root}/policy", b"bundle") == 0
        for topic in [*residents, f"{root}/policy"]:  # the data was on the broker: the gateway has it
            await gw_saw.wait_for(topic)
        not_theirs = [f"{root}/lamp/L2/set", f"{root}/lamp/L2/program", f"{root}/responder/doc2/alert", f"{root}/alarm"]
        for topic in not_theirs:
            assert await publish_code(gw, topic, b"not for you") == 0
        # markers, after everything above
        assert await publish_code(gw, f"{root}/lamp/L1/set", b"marker") == 0
        assert await publish_code(gw, f"{root}/responder/doc1/alert", b"marker") == 0
        await lamp_saw.wait_for(f"{root}/lamp/L1/set")
        await phone_saw.wait_for(f"{root}/responder/doc1/alert")
        assert set(lamp_saw.topics()) == {f"{root}/lamp/L1/set"}
        assert set(phone_saw.topics()) == {f"{root}/responder/doc1/alert"}


async def test_what_the_broker_took_survives_an_agent_crash_and_a_broker_kill(
    layout: tuple[VillageBroker, Gateway],
) -> None:
    """The agent runs (its persistent session subscribes) and goes away; while it is down a
    resident's SOS is taken for it and a lamp program is retained; then the broker itself is
    killed with -9 (no final save) and restarted. The agent comes back and pages the doctor; the
    lamp finds its program: autosave had written both when the broker took them."""
    broker, gateway = layout
    root = gateway.root
    sos = b'{"v":1,"event":"sos","seq":41}'
    async with running(gateway.config, ManualClock(T0)):
        pass  # connected and subscribed once: the session (client id <gateway>-south) exists
    async with broker.client(gateway.id, lan=False) as gw:  # the agent's user, as the rollout does
        assert await publish_code(gw, f"{root}/lamp/L1/program", b"program v3", retain=True) == 0
    async with broker.client("W1") as hub:
        assert await publish_code(hub, f"{root}/wearable/W1/event", sos) == 0
    await _on_disk(broker.workdir / "data" / "mosquitto.db", b"program v3", sos)
    broker.kill_and_restart()
    async with broker.client("doc1") as phone, receiving(phone) as paged:
        await phone.subscribe(f"{root}/responder/doc1/alert", qos=1)
        async with running(gateway.config, ManualClock(T0)) as agent:
            page = msgspec.json.decode(await paged.wait_for(f"{root}/responder/doc1/alert"))
            assert page["device"] == "W1"
            assert agent.stats.received >= 1
    async with broker.client("L1") as lamp, receiving(lamp) as retained:
        await lamp.subscribe(f"{root}/lamp/L1/program", qos=1)
        assert await retained.wait_for(f"{root}/lamp/L1/program") == b"program v3"


async def _on_disk(database: Path, *payloads: bytes, timeout: float = 5.0) -> None:
    """Wait until the broker's autosave has written every payload into its database (the save
    follows the change in the broker's next loop iteration, just after the PUBACK)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError):
            data = await asyncio.to_thread(database.read_bytes)
            if all(payload in data for payload in payloads):
                return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{database} does not hold {payloads} within {timeout}s")
