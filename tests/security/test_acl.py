"""The city broker's ACL (deploy/mosquitto/acl): generated from the topic registry, and on a real
Mosquitto a gateway lives in its own namespace.

The file is checked against the generator (so the ACL and the topics the agent publishes cannot
drift apart) and, rule by rule, against every class of ``topics.TOPIC_CLASSES``. At run time the
clients speak MQTT 5, so a denied publish is observed exactly: PUBACK reason 0x87. Nothing can
be proved absent by waiting for it, so every "nothing arrived" is ordered before a positive
marker on the same path: the broker handles one client's packets in order and delivers to one
subscriber in order, so once the marker has arrived anything forbidden that got through would
have too.
"""

from __future__ import annotations

from pathlib import Path

import aiomqtt
import pytest

from edge_agent.agent.topics import BOTH, NORTH, TOPIC_CLASSES, TopicClass
from edge_agent.cli.acl import city_acl, south_acl
from edge_agent.cli.acl import main as acl_main
from edge_agent.config import load_config
from tests.security.aclfile import rights, sample
from tests.security.city import CENTRE, PROD_ACL, CityBroker, Pki, receiving
from tests.security.village import NOT_AUTHORISED, mqtt_client, publish_code

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NORTH_CLASSES = [c for c in TOPIC_CLASSES if c.side in (NORTH, BOTH)]
SOUTH_ONLY = [c for c in TOPIC_CLASSES if c.side not in (NORTH, BOTH)]
GATEWAY_WRITES = [c for c in NORTH_CLASSES if c.publisher == "gateway"]
CENTRE_WRITES = [c for c in NORTH_CLASSES if c.publisher == CENTRE]


def root(gateway: str) -> str:
    return f"district/v1/{gateway}"


def v5(broker: CityBroker, pki: Pki, user: str, identifier: str | None = None) -> aiomqtt.Client:
    """An MQTT 5 client on the mTLS port whose certificate CN (= user name) is ``user``."""
    return mqtt_client(broker.mtls_port, pki.client(user).context(), identifier=identifier)


# ----- the file --------------------------------------------------------------------------------


def test_shipped_acl_is_exactly_the_generators_output() -> None:
    """Regenerate with `python -m edge_agent.cli.acl --side north -o deploy/mosquitto/acl`."""
    assert PROD_ACL.read_text() == city_acl()


def test_the_command_line_prints_what_is_shipped(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert acl_main(["--side", "north"]) == 0
    assert capsys.readouterr().out == PROD_ACL.read_text()
    assert acl_main(["--side", "north", "-o", str(tmp_path / "acl")]) == 0
    assert (tmp_path / "acl").read_text() == PROD_ACL.read_text()
    example = str(EXAMPLES / "village-gateway.toml")
    assert acl_main(["--side", "south", "-c", example]) == 0
    assert capsys.readouterr().out == south_acl(load_config(example))
    assert acl_main(["--side", "south", "-c", example, "--users"]) == 0
    users = capsys.readouterr().out.split()
    assert users[0] == "naxi-v01"
    assert {"lamp-sq-1", "cam-square", "wear-001", "dr-wang", "centre"} <= set(users)
    assert acl_main(["--side", "south"]) == 2  # which gateway?
    assert "-c" in capsys.readouterr().err
    (tmp_path / "bad.toml").write_text("[gateway]\nid = 'x y'\n")
    assert acl_main(["--side", "south", "-c", str(tmp_path / "bad.toml")]) == 2
    assert "problem(s)" in capsys.readouterr().err


def test_the_registry_has_north_classes_both_ways() -> None:
    """The checks below are not vacuous: the gateway publishes north and the centre sends a policy."""
    assert {"status", "alert", "event", "telemetry_lamp", "policy_ack", "rollout"} <= {c.name for c in GATEWAY_WRITES}
    assert [c.name for c in CENTRE_WRITES] == ["policy", "command_ack"]


@pytest.mark.parametrize("topic_class", NORTH_CLASSES, ids=lambda c: c.name)
def test_every_north_class_is_granted_in_its_direction_only(topic_class: TopicClass) -> None:
    """Each north topic the gateway publishes is writable by that gateway and readable by the
    centre; each the centre publishes (the policy) readable by the gateway and writable by the
    centre only. Another gateway has no right on it at all."""
    text = PROD_ACL.read_text()
    topic = sample("gw1", topic_class)
    gateway, centre = rights(text, "gw1", topic), rights(text, CENTRE, topic)
    if topic_class.publisher == "gateway":
        assert gateway == {"write"}, topic
        assert centre == {"read"}, topic
    else:
        assert topic_class.publisher == CENTRE
        assert gateway == {"read"}, topic  # a gateway can never publish a policy, not even its own
        assert centre == {"write"}, topic
    assert rights(text, "gw2", topic) == set(), f"another gateway has rights on {topic}"
    assert rights(text, "", topic) == set(), "a client without a user name has rights"


@pytest.mark.parametrize("topic_class", SOUTH_ONLY, ids=lambda c: c.name)
def test_no_south_topic_is_granted_on_the_city_broker(topic_class: TopicClass) -> None:
    """Devices, residents' wearables and responders' phones use the village broker: on the city
    broker nobody, not even the gateway or the centre, can publish or read their topics."""
    text = PROD_ACL.read_text()
    topic = sample("gw1", topic_class)
    for user in ("gw1", CENTRE, "gw2"):
        assert rights(text, user, topic) == set(), (user, topic)


# ----- on a real broker (MQTT 5) ---------------------------------------------------------------


async def test_gateway_cannot_publish_into_another_gateways_namespace(
    broker: CityBroker, pki: Pki, gateways: tuple[str, str]
) -> None:
    """B publishing any of A's north topics (or anything outside its own namespace) is refused
    with 0x87; A's own publishes of every class are taken and reach the centre."""
    a, b = gateways
    forbidden = [sample(a, c) for c in NORTH_CLASSES] + [
        sample(a, c)
        for c in SOUTH_ONLY  # A's lamps, residents, doctors: not here, not by B
    ]
    forbidden += [f"{root(b)}/policy", "district/v1/centre/anything", "district/v1", "elsewhere/topic"]
    async with (
        v5(broker, pki, CENTRE) as centre,
        v5(broker, pki, a) as gateway_a,
        v5(broker, pki, b) as gateway_b,
        receiving(centre) as seen,
    ):
        await centre.subscribe("#", qos=1)
        codes = {topic: await publish_code(gateway_b, topic, b"forged by B") for topic in forbidden}
        assert codes == dict.fromkeys(forbidden, NOT_AUTHORISED)
        own = [sample(a, c) for c in GATEWAY_WRITES]
        assert [await publish_code(gateway_a, topic, b"A's own") for topic in own] == [0] * len(own)
        for topic in own:
            assert await seen.wait_for(topic) == b"A's own"
        assert b"forged by B" not in [payload for _, payload in seen.messages]


async def test_gateway_cannot_read_another_gateways_topics(
    broker: CityBroker, pki: Pki, gateways: tuple[str, str]
) -> None:
    a, b = gateways
    b_topics = [sample(b, c) for c in GATEWAY_WRITES]
    async with (
        v5(broker, pki, CENTRE) as centre,
        v5(broker, pki, a) as gateway_a,
        v5(broker, pki, b) as gateway_b,
        receiving(gateway_a) as a_saw,
        receiving(centre) as centre_saw,
    ):
        await centre.subscribe(f"{root(b)}/#", qos=1)
        for pattern in (
            f"{root(b)}/#",
            "district/v1/+/alert",
            "district/v1/+/telemetry/#",
            "district/v1/+/event/#",
            "district/v1/#",
            "#",
            f"{root(a)}/policy",  # A's own policy: permitted (the positive control)
        ):
            await gateway_a.subscribe(pattern, qos=1)
        for topic in b_topics:  # B reports, as it may
            assert await publish_code(gateway_b, topic, b"report of B") == 0
        for topic in b_topics:  # the forbidden data really was on the broker
            assert await centre_saw.wait_for(topic) == b"report of B"
        marker = f"{root(a)}/policy"
        assert await publish_code(centre, marker, b"marker") == 0
        await a_saw.wait_for(marker)
        assert set(a_saw.topics()) == {marker}  # (one copy per overlapping subscription)


async def test_only_the_centre_can_publish_a_policy(broker: CityBroker, pki: Pki, gateways: tuple[str, str]) -> None:
    a, b = gateways
    policy = f"{root(a)}/policy"
    async with (
        v5(broker, pki, a) as gateway_a,
        v5(broker, pki, b) as gateway_b,
        v5(broker, pki, CENTRE) as centre,
        receiving(gateway_a) as a_saw,
    ):
        await gateway_a.subscribe(policy, qos=1)
        assert await publish_code(gateway_a, policy, b"self-signed by A", retain=True) == NOT_AUTHORISED
        assert await publish_code(gateway_b, policy, b"forged by B", retain=True) == NOT_AUTHORISED
        assert await publish_code(gateway_b, f"{root(b)}/policy", b"self-signed by B", retain=True) == NOT_AUTHORISED
        assert await publish_code(centre, policy, b"signed by the centre", retain=True) == 0
        await a_saw.wait_for(policy)
        assert a_saw.payloads(policy) == [b"signed by the centre"]
    # the retained bundle a gateway finds after a restart is the centre's, not a forgery
    async with v5(broker, pki, a) as again, receiving(again) as retained:
        await again.subscribe(policy, qos=1)
        assert await retained.wait_for(policy) == b"signed by the centre"
    async with v5(broker, pki, CENTRE) as centre, receiving(centre) as seen:
        await centre.subscribe(f"{root(b)}/policy", qos=1)
        marker = f"{root(b)}/policy/ack"
        await centre.subscribe(marker, qos=1)
        async with v5(broker, pki, b) as gateway_b:
            assert await publish_code(gateway_b, marker, b'{"v":1,"status":"accepted"}') == 0  # acks: allowed
        await seen.wait_for(marker)
        assert f"{root(b)}/policy" not in seen.topics(), "B's self-published policy was retained"


async def test_client_id_is_not_an_identity(broker: CityBroker, pki: Pki, gateways: tuple[str, str]) -> None:
    """A gateway that picks another's client id (or ``centre``) still has only its own rights:
    the ACL keys on the certificate's name (%u), never on the client id (%c)."""
    a, b = gateways
    async with v5(broker, pki, CENTRE) as centre, receiving(centre) as seen:
        await centre.subscribe("district/v1/#", qos=1)
        for identifier in (CENTRE, f"{b}-north", b):
            async with v5(broker, pki, a, identifier=identifier) as impostor:
                assert await publish_code(impostor, f"{root(b)}/alert", b"forged") == NOT_AUTHORISED
                assert await publish_code(impostor, f"{root(b)}/policy", b"forged") == NOT_AUTHORISED
                marker = f"{root(a)}/event/{identifier}"
                assert await publish_code(impostor, marker, b"marker") == 0
                await seen.wait_for(marker)
        assert not [t for t in seen.topics() if t.startswith(f"{root(b)}/")]


async def test_taking_over_another_gateways_session_yields_none_of_its_data(
    broker: CityBroker, pki: Pki, gateways: tuple[str, str]
) -> None:
    """B keeps a persistent session subscribed to its policy; A connects with B's client id to
    inherit it. The broker checks read access against A's name: nothing of B's leaks."""
    a, b = gateways
    session = f"{b}-north"
    async with broker.client(pki.client(b), identifier=session, clean_session=False) as gateway_b:
        await gateway_b.subscribe(f"{root(b)}/policy", qos=1)
    async with broker.client(pki.client(CENTRE)) as centre:
        await centre.publish(f"{root(b)}/policy", b"queued for B", qos=1)  # queued offline
    async with (
        broker.client(pki.client(a), identifier=session, clean_session=False) as thief,
        receiving(thief) as stolen,
    ):
        await thief.subscribe(f"{root(a)}/policy", qos=1)
        async with broker.client(pki.client(CENTRE)) as centre:
            await centre.publish(f"{root(b)}/policy", b"live for B", qos=1)
            await centre.publish(f"{root(a)}/policy", b"marker", qos=1)
        await stolen.wait_for(f"{root(a)}/policy")
        assert stolen.topics() == [f"{root(a)}/policy"]


async def test_gateway_cannot_subscribe_its_way_to_broker_internals(
    broker: CityBroker, pki: Pki, gateways: tuple[str, str]
) -> None:
    a, _ = gateways
    async with v5(broker, pki, a) as gateway_a, receiving(gateway_a) as saw:
        await gateway_a.subscribe("$SYS/#", qos=0)
        await gateway_a.subscribe(f"{root(a)}/policy", qos=1)
        async with v5(broker, pki, CENTRE) as centre:
            assert await publish_code(centre, f"{root(a)}/policy", b"marker") == 0
        await saw.wait_for(f"{root(a)}/policy")
        assert saw.topics() == [f"{root(a)}/policy"]
