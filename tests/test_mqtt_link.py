"""The MQTT link: reconnect with capped jittered backoff, resubscribe, honest status."""

from __future__ import annotations

import asyncio
import os
import signal

import aiomqtt
import pytest

from devtools.mosquitto import MosquittoProcess, mosquitto_binary
from edge_agent.errors import TransportError
from edge_agent.transports.broker import free_port
from edge_agent.transports.mqtt import LinkSettings, MqttLink, backoff_delay
from tests.agent.harness import eventually

needs_mosquitto = pytest.mark.skipif(
    mosquitto_binary() is None, reason="needs the mosquitto binary (apt-get install mosquitto)"
)


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    assert [backoff_delay(n, 0.5, 30.0, 1.0) for n in range(8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert backoff_delay(3, 0.5, 30.0, 0.5) == 2.0
    assert backoff_delay(50, 0.5, 30.0, 0.0) == 0.05  # never a busy loop


async def test_reconnect_loop_backs_off_with_the_injected_clock_when_the_broker_is_absent() -> None:
    delays: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        delays.append(seconds)
        if len(delays) >= 6:
            raise asyncio.CancelledError
        await asyncio.sleep(0)

    async def ignore(topic: str, payload: bytes) -> None:
        return None

    settings = LinkSettings("127.0.0.1", free_port(), "t-backoff", reconnect_min=1.0, reconnect_max=8.0)
    link = MqttLink("south", settings, [], ignore, sleep=fake_sleep, rand=lambda: 1.0)
    with pytest.raises(asyncio.CancelledError):
        await link.run()
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert link.failures == 6 and not link.connected
    with pytest.raises(TransportError, match="link is down"):
        await link.publish("x", b"y")


@needs_mosquitto
async def test_link_reconnects_resubscribes_and_reports_a_dead_broker(unique_id: str) -> None:
    received: list[tuple[str, bytes]] = []

    async def collect(topic: str, payload: bytes) -> None:
        received.append((topic, payload))

    with MosquittoProcess() as broker:
        settings = LinkSettings(broker.host, broker.port, unique_id, keepalive=1, reconnect_min=0.05, reconnect_max=0.2)
        link = MqttLink("south", settings, [(f"{unique_id}/in", 1)], collect)
        task = asyncio.create_task(link.run())
        try:
            await link.wait_connected(timeout=10)
            async with aiomqtt.Client(broker.host, broker.port) as client:
                await client.publish(f"{unique_id}/in", b"one", qos=1)
            await eventually(lambda: received, what="first message")

            # a frozen broker: the socket stays open but nothing answers; keepalive notices
            assert broker.proc is not None
            os.kill(broker.proc.pid, signal.SIGSTOP)
            await eventually(lambda: not link.connected, timeout=15, what="link reported down")
            with pytest.raises(TransportError):
                await link.publish(f"{unique_id}/out", b"x")
            os.kill(broker.proc.pid, signal.SIGCONT)

            broker.restart()  # a new broker process on the same port, no persistence
            await eventually(lambda: link.connected, timeout=15, what="reconnected")
            async with aiomqtt.Client(broker.host, broker.port) as client:
                await client.publish(f"{unique_id}/in", b"two", qos=1)
            await eventually(lambda: len(received) == 2, what="message after resubscribe")
            assert received[1] == (f"{unique_id}/in", b"two")
            assert link.connects >= 2
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
