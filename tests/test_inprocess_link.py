"""The in-process link keeps the MQTT link's contract without a broker: delivery by subscription
filter, inbound messages acknowledged only after their commit is durable, and what was not
acknowledged delivered again, in order."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from edge_agent.errors import TransportError
from edge_agent.transports.inprocess import InProcessBus, InProcessLink
from edge_agent.transports.link import SYNC, Handled, Link, LinkFactory, ServedLink
from tests.agent.harness import eventually


@contextlib.asynccontextmanager
async def serving(link: InProcessLink) -> AsyncIterator[InProcessLink]:
    task = asyncio.create_task(link.run())
    try:
        await link.wait_connected(5)
        yield link
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def recorder(into: list[tuple[str, bytes]], answer: Handled = SYNC) -> Callable[[str, bytes], Awaitable[Handled]]:
    async def handle(topic: str, payload: bytes) -> Handled:
        into.append((topic, payload))
        return answer

    return handle


def test_the_bus_and_its_links_fit_the_seam() -> None:
    bus = InProcessBus()
    factory: LinkFactory = bus
    link: ServedLink = bus.link("south", [], recorder([]))
    seen: Link = link
    assert factory is bus and seen.name == "south" and not seen.connected


async def test_messages_reach_the_subscribers_whose_filters_match() -> None:
    bus = InProcessBus()
    got: list[tuple[str, bytes]] = []
    link = bus.link("south", [("d/v1/gw/+/+/event", 1), ("d/v1/gw/policy", 1)], recorder(got))
    peer = bus.peer(["d/v1/gw/#"])
    async with serving(link):
        await peer.publish("d/v1/gw/wearable/W1/event", b"sos")
        await peer.publish("d/v1/gw/wearable/W1/vitals", b"hr")  # no filter of the link's
        await peer.publish("d/v1/other/wearable/W1/event", b"not ours")
        await link.publish("d/v1/gw/policy", b"bundle")  # its own subscription: it hears itself
        await eventually(lambda: len(got) == 2, what="two deliveries")
    assert got == [("d/v1/gw/wearable/W1/event", b"sos"), ("d/v1/gw/policy", b"bundle")]
    assert [topic for topic, _ in peer.messages] == [
        "d/v1/gw/wearable/W1/event",
        "d/v1/gw/wearable/W1/vitals",
        "d/v1/gw/policy",
    ]


async def test_retained_messages_reach_each_connect() -> None:
    bus = InProcessBus()
    await bus.peer().publish("d/v1/gw/lamp/L1/program", b"v3", retain=True)
    got: list[tuple[str, bytes]] = []
    async with serving(bus.link("south", [("d/v1/gw/lamp/+/program", 1)], recorder(got))):
        await eventually(lambda: got, what="the retained program")
    assert got == [("d/v1/gw/lamp/L1/program", b"v3")]
    await bus.peer().publish("d/v1/gw/lamp/L1/program", b"", retain=True)  # cleared
    assert bus.peer(["#"]).messages == []


async def test_a_batch_is_acknowledged_only_after_its_commit_is_durable() -> None:
    bus = InProcessBus()
    got: list[tuple[str, bytes]] = []
    on_disk: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    commits: list[int] = []

    def commit() -> Awaitable[bool]:
        commits.append(len(got))
        return on_disk

    link = bus.link("south", [("t/#", 1)], recorder(got), commit=commit)
    async with serving(link):
        bus.route("t/1", b"a", 1, False)
        bus.route("t/2", b"b", 1, False)  # both arrive before the link reads: one batch
        await eventually(lambda: commits, what="the batch's commit")
        assert commits == [2], "one commit for the batch, after both were handled"
        assert link.acknowledged == 0 and link.pending == 2, "not acknowledged before the disk says so"
        on_disk.set_result(True)
        await eventually(lambda: link.acknowledged == 2, what="the acknowledgements")
    assert link.pending == 0 and got == [("t/1", b"a"), ("t/2", b"b")]


async def test_a_commit_that_raises_acknowledges_nothing_and_the_batch_comes_again() -> None:
    bus = InProcessBus()
    got: list[tuple[str, bytes]] = []
    failures = [OSError("fsync failed")]

    def commit() -> bool:
        if failures:
            raise failures.pop()
        return True

    link = bus.link("south", [("t/#", 1)], recorder(got), commit=commit)
    async with serving(link):
        bus.route("t/1", b"a", 1, False)
        bus.route("t/2", b"b", 1, False)
        await eventually(lambda: link.acknowledged == 2, what="the second try acknowledged")
    assert got == [("t/1", b"a"), ("t/2", b"b")] * 2, "the whole batch again, in order"
    assert link.unhandled == 1 and link.connects == 2


async def test_an_unhandled_message_comes_again_with_what_followed_it() -> None:
    bus = InProcessBus()
    got: list[tuple[str, bytes]] = []
    refusals = 1

    async def handle(topic: str, payload: bytes) -> Handled:
        nonlocal refusals
        got.append((topic, payload))
        if payload == b"b" and refusals:
            refusals -= 1
            return False
        return SYNC

    link = bus.link("south", [("t/#", 1)], handle, commit=lambda: True)
    async with serving(link):
        for payload in (b"a", b"b", b"c"):
            bus.route("t/x", payload, 1, False)
        await eventually(lambda: link.acknowledged == 3, what="all three acknowledged")
    assert [p for _, p in got] == [b"a", b"b", b"b", b"c"], "a acknowledged once; b and c after it"


async def test_publishing_on_a_link_that_is_not_running_fails() -> None:
    link = InProcessBus().link("north", [], recorder([]))
    with pytest.raises(TransportError):
        await link.publish("t/1", b"x")
    with pytest.raises(TransportError):
        await link.wait_connected(0.01)
