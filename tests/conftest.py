"""Shared fixtures: a real MQTT broker on a free port (Mosquitto when on PATH, else amqtt)."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from devtools.mosquitto import MosquittoProcess, mosquitto_binary
from edge_agent.transports.broker import EmbeddedBroker


@dataclass(frozen=True)
class BrokerInfo:
    host: str
    port: int
    kind: str  # "mosquitto" or "amqtt"


class _EmbeddedInThread:
    """amqtt in its own thread and loop, so sync and async tests can share it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.broker = EmbeddedBroker()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with self.broker:
            self._ready.set()
            await self._stop.wait()

    def start(self) -> None:
        self.thread.start()
        if not self._ready.wait(15):
            raise RuntimeError("embedded broker did not start")

    def stop(self) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(10)


@pytest.fixture(scope="session")
def mqtt_broker() -> Iterator[BrokerInfo]:
    """One broker for the session; tests isolate themselves with a unique topic prefix."""
    if mosquitto_binary():
        with MosquittoProcess() as mosq:
            yield BrokerInfo(mosq.host, mosq.port, "mosquitto")
    else:
        embedded = _EmbeddedInThread()
        embedded.start()
        try:
            yield BrokerInfo(embedded.broker.host, embedded.broker.port, "amqtt")
        finally:
            embedded.stop()


@pytest.fixture
def unique_id() -> str:
    """A short unique id for gateway names and topic prefixes, so tests never cross-talk."""
    return "t" + uuid.uuid4().hex[:10]
