"""The inbound acknowledgements of an MQTT link.

Owns: ``AckPipeline`` (a connection's PUBACKs, in order, each batch once its commit is on
disk), used by edge_agent/transports/mqtt.py. Must not import: the engine, the policy, the
store or the agent (nor the link: it sees the link's counters only, ``InboundCounters``).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable
from typing import Protocol

import aiomqtt

from edge_agent.transports.mqtt_client import Inbound
from edge_agent.transports.mqtt_io import acknowledge

log = logging.getLogger("edge_agent.transports.mqtt")


class InboundCounters(Protocol):
    """What the pipeline reads and counts on its link."""

    name: str
    unhandled: int  # each time messages were not made durable
    unhandled_streak: int  # failures in a row (the reconnect backs off by it); 0 once one is acknowledged


class AckPipeline:
    """One connection's inbound acknowledgements: in order, each batch only once its commit
    is durable (the handler's ``commit`` answered True, or the awaitable it returned resolved
    True). A failed one stops every acknowledgement on this connection and disconnects it:
    the broker delivers everything unacknowledged again when the session resumes."""

    def __init__(self, link: InboundCounters, client: aiomqtt.Client) -> None:
        self.link = link
        self.client = client
        self.queue: collections.deque[tuple[list[Inbound], asyncio.Future[bool] | None]] = collections.deque()
        self.failed = False
        self.empty = asyncio.Event()
        self.empty.set()

    def add(self, messages: list[Inbound], durable: bool | Awaitable[bool]) -> None:
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
            if messages:
                acknowledge(self.client._client, messages)
                self.link.unhandled_streak = 0
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
