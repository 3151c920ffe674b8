"""A real agent on the shipped layout, end to end: the village broker from
deploy/mosquitto/south.conf with the ACL generated for the gateway (the agent on the loopback
listener as its own user; lamps, wearable hubs, phones and the centre as theirs on the TLS LAN
listener) and the city broker from deploy/mosquitto/mosquitto.conf with the shipped ACL
(deploy/mosquitto/acl, byte for byte; mutual TLS, certificate CN = user name).

The centre must receive one message of every north topic class the gateway publishes (the
list comes from the registry, so a new class fails here until it is driven and granted), and
each device its own south messages; another gateway, subscribed to everything, receives none
of them and can publish none of them (PUBACK 0x87). Test clients speak MQTT 5.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import msgspec

from edge_agent.agent import topics
from edge_agent.agent.shadow import queue_report
from edge_agent.agent.topics import BOTH, NORTH, SOUTH, TOPIC_CLASSES
from edge_agent.cli import acl
from edge_agent.clock import ManualClock
from edge_agent.policy.shadow_report import ShadowReport
from tests.agent.harness import T0, running
from tests.security.aclfile import sample
from tests.security.city import CENTRE, Inbox, Pki, city_broker, receiving
from tests.security.layout import uplink, write_gateway
from tests.security.village import NOT_AUTHORISED, VillageBroker, mqtt_client, publish_code

GATEWAY_NORTH = {c.name for c in TOPIC_CLASSES if c.publisher == "gateway" and c.side in (NORTH, BOTH)}
GATEWAY_SOUTH = {c.name for c in TOPIC_CLASSES if c.publisher == "gateway" and c.side in (SOUTH, BOTH)}


def json(**fields: object) -> bytes:
    return msgspec.json.encode({"v": 1, **fields})


async def classes_seen(inbox: Inbox, gateway: str, wanted: set[str], timeout: float = 20.0) -> dict[str, str]:
    """Wait until ``inbox`` holds a message of every class in ``wanted``: {class: a topic}."""
    deadline = time.monotonic() + timeout
    while True:
        seen: dict[str, str] = {}
        for topic in inbox.topics():
            found = topics.match(gateway, topic)
            if found is not None:
                seen.setdefault(found[0].name, topic)
        if wanted <= set(seen):
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(f"never received {sorted(wanted - set(seen))}; received {sorted(set(inbox.topics()))}")
        await asyncio.sleep(0.02)


async def test_agent_on_the_shipped_layout_reaches_the_centre_with_every_north_class(
    tmp_path: Path, pki: Pki, gateways: tuple[str, str]
) -> None:
    a, b = gateways
    assert {"status", "alert", "event", "telemetry_lamp", "policy_ack", "rollout"} <= GATEWAY_NORTH
    with city_broker(tmp_path / "city", pki) as city:
        village = VillageBroker(tmp_path / "village", pki)
        gateway = write_gateway(tmp_path / "gw", pki, a, village.local_port, uplink(city.mtls_port))
        assert not acl.shares_broker(gateway.config)
        village.start(gateway.config, gateway.passwords)
        root = gateway.root
        try:
            async with (
                mqtt_client(city.mtls_port, pki.client(CENTRE).context()) as centre,
                receiving(centre) as north,
                mqtt_client(city.mtls_port, pki.client(b).context()) as other,
                receiving(other) as other_saw,
                village.client(CENTRE) as local_centre,
                receiving(local_centre) as local_saw,
                village.client("L1") as lamp,
                receiving(lamp) as lamp_saw,
                village.client("doc1") as phone,
                receiving(phone) as phone_saw,
                village.client("W1") as hub,
            ):
                await centre.subscribe("district/v1/#", qos=1)
                for pattern in (f"{root}/#", "district/v1/+/alert", "district/v1/#", "#", f"district/v1/{b}/policy"):
                    await other.subscribe(pattern, qos=1)
                for client in (local_centre, lamp, phone):
                    await client.subscribe("#", qos=1)  # each receives only what the ACL lets it read

                async with running(gateway.config, ManualClock(T0)) as agent:
                    # drive one message of every class: status and rollout come with the start
                    assert await publish_code(lamp, f"{root}/lamp/L1/state", json(on=False, level=0)) == 0
                    assert await publish_code(hub, f"{root}/wearable/W1/vitals", json(battery=9)) == 0
                    assert await publish_code(hub, f"{root}/wearable/W1/event", json(event="sos", seq=1)) == 0
                    bundle = gateway.bundle(version=1)
                    assert await publish_code(centre, topics.policy(a), bundle, retain=True) == 0
                    agent.alarm("drill", "security test drill")
                    drill = ShadowReport(
                        gateway=a, candidate="drill", candidate_sha256="0" * 64, days_planned=1, started=""
                    )
                    queue_report(agent.store, agent.links, drill, time.time())  # as shadow mode does at a day's end

                    north_classes = await classes_seen(north, a, GATEWAY_NORTH)
                    ack = msgspec.json.decode(await north.wait_for(topics.policy_ack(a)))
                    assert ack["status"] == "accepted", ack
                    assert ack["version"] == 1
                    assert north_classes["event"] == f"{root}/event/wearable/low-battery"
                    assert north_classes["telemetry_lamp"] == f"{root}/telemetry/lamp/L1"
                    page = msgspec.json.decode(await phone_saw.wait_for(topics.responder_alert(a, "doc1")))
                    alert = msgspec.json.decode(await north.wait_for(topics.alert(a)))
                    assert page["alert_id"] == alert["alert_id"]
                    program = msgspec.json.decode(await lamp_saw.wait_for(topics.lamp_program(a, "L1")))
                    assert program["policy_version"] == 1
                    await lamp_saw.wait_for(topics.lamp_set(a, "L1"))
                    assert msgspec.json.decode(await local_saw.wait_for(topics.alarm(a)))["reason"] == "drill"
                    assert await local_saw.wait_for(topics.status(a)) == b"online"  # the south birth
                    assert agent.stats.rejected == {}

                # every gateway-published south class reached its reader on the village broker
                south_seen = {
                    found[0].name
                    for inbox in (local_saw, lamp_saw, phone_saw)
                    for topic in inbox.topics()
                    if (found := topics.match(a, topic)) is not None
                }
                assert south_seen >= GATEWAY_SOUTH, sorted(GATEWAY_SOUTH - south_seen)
                # ...and each party only its own
                assert {t for t in lamp_saw.topics() if not t.startswith(f"{root}/lamp/L1/")} == set()
                assert set(phone_saw.topics()) == {topics.responder_alert(a, "doc1")}

                # gateway B: none of A's traffic reached it, and it cannot publish any of it
                forged = {topic: await publish_code(other, topic, b"forged by B") for topic in north_classes.values()}
                forged[topics.policy(a)] = await publish_code(other, topics.policy(a), b"forged by B", retain=True)
                assert forged == dict.fromkeys(forged, NOT_AUTHORISED)
                marker = f"district/v1/{b}/policy"
                assert await publish_code(centre, marker, b"marker") == 0
                await other_saw.wait_for(marker)
                assert set(other_saw.topics()) == {marker}, "gateway B received A's messages"
        finally:
            village.stop()


async def test_north_class_samples_are_all_refused_to_another_gateway_on_the_shipped_acl(
    tmp_path: Path, pki: Pki, gateways: tuple[str, str]
) -> None:
    """The same cross-gateway wall for the classes as the registry lists them (not only the
    topics one agent run happened to use): B may neither publish nor read A's north classes."""
    a, b = gateways
    north = [c for c in TOPIC_CLASSES if c.side in (NORTH, BOTH)]
    with city_broker(tmp_path / "city", pki) as city:
        async with (
            mqtt_client(city.mtls_port, pki.client(b).context()) as other,
            receiving(other) as other_saw,
            mqtt_client(city.mtls_port, pki.client(a).context()) as gateway_a,
            mqtt_client(city.mtls_port, pki.client(CENTRE).context()) as centre,
        ):
            await other.subscribe(f"district/v1/{a}/#", qos=1)
            await other.subscribe(f"district/v1/{b}/policy", qos=1)
            for topic_class in north:
                topic = sample(a, topic_class)
                assert await publish_code(other, topic, b"forged by B") == NOT_AUTHORISED, topic
                writer = gateway_a if topic_class.publisher == "gateway" else centre
                assert await publish_code(writer, topic, b"A's") == 0, topic
            assert await publish_code(centre, f"district/v1/{b}/policy", b"marker") == 0
            await other_saw.wait_for(f"district/v1/{b}/policy")
            assert set(other_saw.topics()) == {f"district/v1/{b}/policy"}
