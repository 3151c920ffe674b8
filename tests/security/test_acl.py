"""The ACL of deploy/mosquitto/acl on a real Mosquitto: a gateway lives in its own namespace.

Nothing can be proved absent by waiting for it, so every negative check is ordered before a
positive marker: the forbidden messages are published (and PUBACKed) first, then a permitted
marker; the broker handles one client's packets in order and delivers to one subscriber in
order, so once the marker has arrived anything forbidden that got through would have too.
"""

from __future__ import annotations

from tests.security.city import CENTRE, CityBroker, Pki, receiving


def root(gateway: str) -> str:
    return f"district/v1/{gateway}"


async def test_gateway_cannot_publish_into_another_gateways_topics(
    broker: CityBroker, pki: Pki, gateways: tuple[str, str]
) -> None:
    a, b = gateways
    forbidden = [
        f"{root(b)}/lamp/L1/set",  # switching B's lamps
        f"{root(b)}/wearable/W1/event",  # forging a resident's SOS at B
        f"{root(b)}/responder/doc1/alert",  # paging B's doctor
        f"{root(b)}/alert",
        f"{root(b)}/status",
        f"{root(b)}/event/anything",
        f"{root(b)}/policy",
        "district/v1/centre/anything",
        "district/v1",
        "elsewhere/topic",
    ]
    async with (
        broker.client(pki.client(CENTRE)) as centre,
        broker.client(pki.client(a)) as gateway_a,
        receiving(centre) as seen,
    ):
        await centre.subscribe("#", qos=1)
        for topic in forbidden:
            await gateway_a.publish(topic, b"forged by A", qos=1)
        marker = f"{root(a)}/event/marker"
        await gateway_a.publish(marker, b"A's own namespace works", qos=1)
        assert await seen.wait_for(marker) == b"A's own namespace works"
        assert [t for t in seen.topics() if t != marker] == []


async def test_gateway_cannot_read_another_gateways_topics_or_residents_data(
    broker: CityBroker, pki: Pki, gateways: tuple[str, str]
) -> None:
    a, b = gateways
    b_topics = [
        f"{root(b)}/wearable/W1/event",
        f"{root(b)}/wearable/W1/vitals",
        f"{root(b)}/responder/doc1/alert",
        f"{root(b)}/responder/doc1/ack",
        f"{root(b)}/lamp/L1/state",
        f"{root(b)}/alert",
        f"{root(b)}/event/sos",
    ]
    async with (
        broker.client(pki.client(CENTRE)) as centre,
        broker.client(pki.client(a)) as gateway_a,
        broker.client(pki.client(b)) as gateway_b,
        receiving(gateway_a) as a_saw,
        receiving(centre) as centre_saw,
    ):
        await centre.subscribe(f"{root(b)}/#", qos=1)
        for pattern in (
            f"{root(b)}/#",
            "district/v1/+/wearable/#",
            "district/v1/+/responder/#",
            "district/v1/#",
            "#",
            f"{root(a)}/wearable/+/event",  # A's own residents: permitted (the positive control)
        ):
            await gateway_a.subscribe(pattern, qos=1)
        for topic in b_topics:  # B publishes its own data, as it may
            await gateway_b.publish(topic, b"resident data of B", qos=1)
        # the forbidden data really was on the broker: the centre saw every message
        for topic in b_topics:
            assert await centre_saw.wait_for(topic) == b"resident data of B"
        marker = f"{root(a)}/wearable/W7/event"
        await centre.publish(marker, b"marker", qos=1)
        await a_saw.wait_for(marker)
        assert all(topic.startswith(f"{root(a)}/") for topic in a_saw.topics()), a_saw.topics()


async def test_only_the_centre_can_publish_a_policy(broker: CityBroker, pki: Pki, gateways: tuple[str, str]) -> None:
    a, b = gateways
    policy = f"{root(a)}/policy"
    async with (
        broker.client(pki.client(a)) as gateway_a,
        broker.client(pki.client(b)) as gateway_b,
        broker.client(pki.client(CENTRE)) as centre,
        receiving(gateway_a) as a_saw,
    ):
        await gateway_a.subscribe(policy, qos=1)
        await gateway_a.publish(policy, b"self-signed by A", qos=1, retain=True)  # its own: no
        await gateway_b.publish(policy, b"forged by B", qos=1, retain=True)  # another's: no
        await gateway_b.publish(f"{root(b)}/policy", b"self-signed by B", qos=1, retain=True)
        await centre.publish(policy, b"signed by the centre", qos=1, retain=True)
        await a_saw.wait_for(policy)
        assert a_saw.payloads(policy) == [b"signed by the centre"]
    # the retained bundle a gateway finds after a restart is the centre's, not a forgery
    async with broker.client(pki.client(a)) as again, receiving(again) as retained:
        await again.subscribe(policy, qos=1)
        assert await retained.wait_for(policy) == b"signed by the centre"
    async with broker.client(pki.client(CENTRE)) as centre, receiving(centre) as seen:
        await centre.subscribe(f"{root(b)}/policy", qos=1)
        marker = f"{root(b)}/policy/ack"
        await centre.subscribe(marker, qos=1)
        async with broker.client(pki.client(b)) as gateway_b:
            await gateway_b.publish(marker, b'{"v":1,"status":"accepted"}', qos=1)  # acks: allowed
        await seen.wait_for(marker)
        assert f"{root(b)}/policy" not in seen.topics(), "B's self-published policy was retained"


async def test_client_id_is_not_an_identity(broker: CityBroker, pki: Pki, gateways: tuple[str, str]) -> None:
    """A gateway that picks another's client id (or ``centre``) still has only its own rights:
    the ACL keys on the certificate's name (%u), never on the client id (%c)."""
    a, b = gateways
    async with (
        broker.client(pki.client(CENTRE)) as centre,
        receiving(centre) as seen,
    ):
        await centre.subscribe("district/v1/#", qos=1)
        for identifier in (CENTRE, f"{b}-north", b):
            async with broker.client(pki.client(a), identifier=identifier) as impostor:
                await impostor.publish(f"{root(b)}/lamp/L1/set", b"forged", qos=1)
                await impostor.publish(f"{root(b)}/policy", b"forged", qos=1)
                marker = f"{root(a)}/event/{identifier}"
                await impostor.publish(marker, b"marker", qos=1)
                await seen.wait_for(marker)
        assert not [t for t in seen.topics() if t.startswith(f"{root(b)}/")]


async def test_taking_over_another_gateways_session_yields_none_of_its_data(
    broker: CityBroker, pki: Pki, gateways: tuple[str, str]
) -> None:
    """B keeps a persistent session subscribed to its lamp commands; A connects with B's
    client id to inherit it. The broker checks read access against A's name: nothing leaks."""
    a, b = gateways
    session = f"{b}-south"
    async with broker.client(pki.client(b), identifier=session, clean_session=False) as gateway_b:
        await gateway_b.subscribe(f"{root(b)}/lamp/+/set", qos=1)
    async with broker.client(pki.client(CENTRE)) as centre:
        await centre.publish(f"{root(b)}/lamp/L1/set", b"queued for B", qos=1)  # queued offline
    async with (
        broker.client(pki.client(a), identifier=session, clean_session=False) as thief,
        receiving(thief) as stolen,
    ):
        await thief.subscribe(f"{root(a)}/lamp/+/set", qos=1)
        async with broker.client(pki.client(CENTRE)) as centre:
            await centre.publish(f"{root(b)}/lamp/L2/set", b"live for B", qos=1)
            await centre.publish(f"{root(a)}/lamp/L1/set", b"marker", qos=1)
        await stolen.wait_for(f"{root(a)}/lamp/L1/set")
        assert stolen.topics() == [f"{root(a)}/lamp/L1/set"]


async def test_gateway_cannot_subscribe_its_way_to_broker_internals(
    broker: CityBroker, pki: Pki, gateways: tuple[str, str]
) -> None:
    a, _ = gateways
    async with broker.client(pki.client(a)) as gateway_a, receiving(gateway_a) as saw:
        await gateway_a.subscribe("$SYS/#", qos=0)
        await gateway_a.subscribe(f"{root(a)}/lamp/+/set", qos=1)
        async with broker.client(pki.client(CENTRE)) as centre:
            await centre.publish(f"{root(a)}/lamp/L1/set", b"marker", qos=1)
        await saw.wait_for(f"{root(a)}/lamp/L1/set")
        assert saw.topics() == [f"{root(a)}/lamp/L1/set"]
