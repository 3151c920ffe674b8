"""The inbound side of an MQTT link that is not about the connection itself.

Owns: ``AckPipeline`` (a connection's PUBACKs, in order, each batch once its commit is on
disk) and ``share_paho_property_tables`` (paho's MQTT 5 property tables built once).
edge_agent/transports/mqtt.py uses both. Must not import: the engine, the policy, the store
or the agent.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

if TYPE_CHECKING:
    from edge_agent.transports.mqtt import MqttLink

log = logging.getLogger("edge_agent.transports.mqtt")


def share_paho_property_tables() -> None:
    """paho (2.x) builds two constant lookup tables (28 names, 27 property kinds) in *every*
    ``Properties`` object, makes one for every MQTT 5 packet it reads, and empties it by
    trying 28 names: about a quarter of the agent's CPU in a QoS 1 flood. Built once and
    shared as class attributes, with ``clear`` deleting only what is set, the objects behave
    the same (tests/test_mqtt_link.py packs and unpacks them against the spec's bytes)."""
    if getattr(Properties, "_edge_agent_shared", False):
        return
    template = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    for table in ("types", "names", "properties"):
        setattr(Properties, table, getattr(template, table))
    private = frozenset({"packetType", "types", "names", "properties"})

    def init(self: Properties, packet_type: int) -> None:
        object.__setattr__(self, "packetType", packet_type)

    def clear(self: Properties) -> None:
        for name in [n for n in vars(self) if n not in private]:
            delattr(self, name)

    Properties.__init__ = init  # type: ignore[method-assign]
    Properties.clear = clear  # type: ignore[method-assign]
    Properties._edge_agent_shared = True  # type: ignore[attr-defined]


class AckPipeline:
    """One connection's inbound acknowledgements: in order, each batch only once its commit
    is durable (the handler's ``commit`` answered True, or the awaitable it returned resolved
    True). A failed one stops every acknowledgement on this connection and disconnects it:
    the broker delivers everything unacknowledged again when the session resumes."""

    def __init__(self, link: MqttLink, client: aiomqtt.Client) -> None:
        self.link = link
        self.client = client
        self.queue: collections.deque[tuple[list[aiomqtt.Message], asyncio.Future[bool] | None]] = collections.deque()
        self.failed = False
        self.empty = asyncio.Event()
        self.empty.set()

    def add(self, messages: list[aiomqtt.Message], durable: bool | Awaitable[bool]) -> None:
        if self.failed:
            return
        if durable is False:
            self._fail(len(messages))
            return
        future: asyncio.Future[bool] | None = None
        if durable is not True:
            future = asyncio.ensure_future(durable)
            future.add_done_callback(lambda _: self._release())
        self.queue.append((messages, future))
        self.empty.clear()
        self._release()

    def _release(self) -> None:
        while self.queue and not self.failed:
            messages, future = self.queue[0]
            if future is not None:
                if not future.done():
                    return
                if future.cancelled() or future.exception() is not None or not future.result():
                    self._fail(len(messages))
                    return
            self.queue.popleft()
            for message in messages:
                self.client._client.ack(message.mid, message.qos)
            if messages:
                self.link._unhandled_streak = 0
        self.empty.set()

    def _fail(self, count: int) -> None:
        self.failed = True
        self.queue.clear()
        self.empty.set()
        self.link.unhandled += 1
        log.warning("%s link: %d messages not made durable; reconnecting", self.link.name, count)
        self.client._client.disconnect()  # the reader ends; the session (and what it holds) stays

    async def settle(self) -> bool:
        """Wait until every queued batch is acknowledged; False if one failed."""
        await self.empty.wait()
        return not self.failed
