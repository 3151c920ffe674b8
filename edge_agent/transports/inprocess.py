"""Links that meet inside this process: a bus with a broker's routing, without a broker.

Owns: ``InProcessBus`` (what a broker does for the agent: every publish goes to each attached
link or peer with a matching subscription filter, matched by paho's ``topic_matches_sub``;
retained messages kept per topic and delivered on each connect), ``InProcessLink`` (a
``ServedLink`` on it with ``MqttLink``'s inbound contract: what arrives is read in batches of up
to ``BATCH``, handed to the handler in order, the batch committed once and acknowledged only
once that commit says it is durable; a message the handler could not handle, or a batch whose
commit failed or raised, is not acknowledged and comes again, in order, with what followed it,
as a broker does for a resumed session; unlike ``MqttLink`` it reads the next batch only once
this one is acknowledged) and ``InProcessPeer`` (a device, the platform or a test on the bus:
publishes and records what it receives). The bus is also a ``LinkFactory``:
``Agent(config, links=bus)``. For tests and simulations; a gateway uses
edge_agent/transports/mqtt.py.
Must not import: the engine, the policy, the store or the agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from paho.mqtt.client import topic_matches_sub

from edge_agent.errors import TransportError
from edge_agent.transports.link import Commit, LinkSpec, MessageHandler, Outgoing, ServedLink

log = logging.getLogger(__name__)

RETRY_S = 0.05  # before an unacknowledged message comes again


@dataclass(frozen=True)
class Delivery:
    """One message on its way to one link; ``mid`` orders a link's deliveries."""

    mid: int
    topic: str
    payload: bytes
    qos: int


class InProcessBus:
    """What a broker does for the links and peers attached to it, in this event loop."""

    def __init__(self) -> None:
        self.retained: dict[str, bytes] = {}
        self._links: dict[str, InProcessLink] = {}  # by name: one session per client
        self._peers: list[InProcessPeer] = []

    def link(
        self,
        name: str,
        subscriptions: Sequence[tuple[str, int]],
        on_message: MessageHandler,
        *,
        commit: Commit | None = None,
        on_connect: Callable[[], None] | None = None,
    ) -> InProcessLink:
        """A link on this bus; it connects (and receives) once ``run`` runs. A link of the same
        name before it is gone: this one resumes its session (what it had not acknowledged, and
        what came since, is delivered to this one first), as a client with the same id does."""
        link = InProcessLink(self, name, subscriptions, on_message, commit=commit, on_connect=on_connect)
        previous = self._links.pop(name, None)
        if previous is not None:
            link.resume(previous)
        self._links[name] = link
        return link

    def peer(
        self, subscriptions: Sequence[str] = (), on_message: Callable[[str, bytes], None] | None = None
    ) -> InProcessPeer:
        """A client on this bus, connected at once: what it receives goes to ``on_message``
        (and its ``messages``); retained messages matching its filters first."""
        peer = InProcessPeer(self, list(subscriptions), on_message)
        self._peers.append(peer)
        for topic, payload in list(self.retained.items()):
            if peer.wants(topic):
                peer.deliver(topic, payload)
        return peer

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[Callable[[LinkSpec], ServedLink]]:
        """``LinkFactory``: the agent's south and north links on this bus."""

        def make(spec: LinkSpec) -> ServedLink:
            link = self.link(
                spec.name, spec.subscriptions, spec.on_message, commit=spec.commit, on_connect=spec.on_connect
            )
            link.on_published = spec.on_published
            return link

        yield make

    def route(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        """Deliver a publish to every subscriber whose filter matches; keep it if retained
        (an empty retained payload clears the topic's)."""
        if retain:
            if payload:
                self.retained[topic] = payload
            else:
                self.retained.pop(topic, None)
        for link in self._links.values():
            granted = link.granted(topic)
            if granted is not None:
                link.deliver(topic, payload, min(qos, granted))
        for peer in self._peers:
            if peer.wants(topic):
                peer.deliver(topic, payload)


class InProcessPeer:
    """A client on the bus that is always connected: publishes, and records what it receives."""

    def __init__(
        self, bus: InProcessBus, subscriptions: list[str], on_message: Callable[[str, bytes], None] | None
    ) -> None:
        self.bus = bus
        self.subscriptions = subscriptions
        self.on_message = on_message
        self.messages: list[tuple[str, bytes]] = []

    def wants(self, topic: str) -> bool:
        return any(topic_matches_sub(sub, topic) for sub in self.subscriptions)

    def deliver(self, topic: str, payload: bytes) -> None:
        self.messages.append((topic, payload))
        if self.on_message is not None:
            self.on_message(topic, payload)

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        self.bus.route(topic, payload, qos, retain)
        await asyncio.sleep(0)  # a publish is a round trip: others run meanwhile


class InProcessLink:
    """A ``ServedLink`` on an ``InProcessBus``. Connected while ``run`` runs; what arrives
    while it is not waits for it (a persistent session)."""

    BATCH = 256  # as MqttLink: messages read together, committed once

    def __init__(
        self,
        bus: InProcessBus,
        name: str,
        subscriptions: Sequence[tuple[str, int]],
        on_message: MessageHandler,
        *,
        commit: Commit | None = None,
        on_connect: Callable[[], None] | None = None,
    ) -> None:
        self.bus = bus
        self.name = name
        self.subscriptions = list(subscriptions)
        self.on_message = on_message
        self.commit = commit
        self.on_connect = on_connect
        self.on_published: Callable[[str], None] | None = None
        self.connects = 0
        self.failures = 0
        self.last_error: str | None = None
        self.refused: Counter[str] = Counter()
        self.unhandled = 0
        self.acknowledged = 0  # inbound QoS 1 messages acknowledged (their commit was durable)
        self._up = asyncio.Event()
        self._inbox: asyncio.Queue[Delivery] = asyncio.Queue()
        self._unacked: dict[int, Delivery] = {}  # handed to the handler, not acknowledged yet
        self._mids = itertools.count(1)

    @property
    def address(self) -> str:
        return "in-process"

    @property
    def connected(self) -> bool:
        return self._up.is_set()

    @property
    def pending(self) -> int:
        """Inbound messages not acknowledged yet: waiting, or handled and not yet durable."""
        return self._inbox.qsize() + len(self._unacked)

    async def wait_connected(self, timeout: float | None = None) -> None:
        try:
            async with asyncio.timeout(timeout):  # (3.11's wait_for can swallow a cancellation)
                await self._up.wait()
        except TimeoutError:
            raise TransportError(f"{self.name} link not connected within {timeout}s") from None

    # ----- outbound ---------------------------------------------------------------------------
    async def publish_many(self, messages: Sequence[Outgoing]) -> list[Exception | None]:
        if not self._up.is_set():
            raise TransportError(f"{self.name} link is down")
        for topic, payload, qos, retain in messages:
            self.bus.route(topic, payload, qos, retain)
            if self.on_published is not None:
                self.on_published(topic)
        await asyncio.sleep(0)  # a publish is a round trip: others run meanwhile
        return [None] * len(messages)

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        (failure,) = await self.publish_many([(topic, payload, qos, retain)])
        if failure is not None:
            raise failure

    # ----- inbound ----------------------------------------------------------------------------
    def granted(self, topic: str) -> int | None:
        """The QoS of the first subscription matching ``topic``, None if none does."""
        for sub, qos in self.subscriptions:
            if topic_matches_sub(sub, topic):
                return qos
        return None

    def deliver(self, topic: str, payload: bytes, qos: int) -> None:
        self._inbox.put_nowait(Delivery(next(self._mids), topic, payload, qos))

    async def run(self) -> None:
        """Connect, serve, and after a message that was not acknowledged, connect again to
        have it (and everything after it) once more; until cancelled."""
        while True:
            for topic, payload in list(self.bus.retained.items()):
                granted = self.granted(topic)
                if granted is not None:
                    self.deliver(topic, payload, granted)
            self.connects += 1
            self._up.set()
            if self.on_connect is not None:
                self.on_connect()
            try:
                await self._serve()
            finally:
                self._up.clear()
            self.unhandled += 1
            self._requeue()
            await asyncio.sleep(RETRY_S)

    async def _serve(self) -> None:
        """Until a message or a batch is not acknowledged (it stays in ``_unacked``)."""
        while True:
            batch = [await self._inbox.get()]
            while len(batch) < self.BATCH and not self._inbox.empty():
                batch.append(self._inbox.get_nowait())
            for delivery in batch:
                if delivery.qos > 0:
                    self._unacked[delivery.mid] = delivery
            handled: list[Delivery] = []  # in order, acknowledged once the commit is durable
            refused = False
            for delivery in batch:
                if await self.on_message(delivery.topic, delivery.payload) is False:
                    if delivery.qos == 0:
                        continue  # nothing to acknowledge: it does not come again
                    refused = True  # it and what follows come again, after what came before
                    break
                if delivery.qos > 0:
                    handled.append(delivery)
            if not await self._durable():
                log.warning("%s link: %d messages not made durable; they come again", self.name, len(batch))
                return
            for delivery in handled:
                del self._unacked[delivery.mid]
                self.acknowledged += 1
            if refused:
                log.warning("%s link: a message was not handled; it comes again", self.name)
                return

    async def _durable(self) -> bool:
        """The handler's ``commit``: True once what the batch caused is durable; False if it
        failed, or raised (nothing was made durable)."""
        if self.commit is None:
            return True
        try:
            durable = self.commit()
            if durable is not True and durable is not False:
                durable = await durable
        except Exception as exc:
            log.warning("%s link: commit failed: %r", self.name, exc)
            return False
        return durable

    def resume(self, previous: InProcessLink) -> None:
        """Take over ``previous``'s session: what it was given and did not acknowledge."""
        previous._requeue()
        while not previous._inbox.empty():
            delivery = previous._inbox.get_nowait()
            self._inbox.put_nowait(delivery)
            self._mids = itertools.count(delivery.mid + 1)

    def _requeue(self) -> None:
        """What was not acknowledged comes again first, in the order it first came."""
        waiting = list(self._unacked.values())
        while not self._inbox.empty():
            waiting.append(self._inbox.get_nowait())
        self._unacked.clear()
        for delivery in sorted(waiting, key=lambda d: d.mid):
            self._inbox.put_nowait(delivery)
