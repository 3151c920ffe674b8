"""An MQTT link that stays up: aiomqtt plus reconnect, resubscribe and honest status.

Owns: one broker connection (south or north). aiomqtt does not reconnect by itself; ``run``
does, with jittered exponential backoff and a cap, resubscribes, and re-sends the birth
message. ``connected`` is true only while a session is up: a dead link (keepalive missed,
socket closed) flips it to false before any publish could pretend to succeed.
``publish`` with QoS 1 returns only after the broker's PUBACK.
Must not import: the engine, the policy, the store or the agent.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiomqtt

from edge_agent.errors import TransportError

log = logging.getLogger(__name__)


class _ClientLogFilter(logging.Filter):
    """Keeps aiomqtt's log useful: drops its 'pending publish calls' notice (the outbox
    pipelines on purpose) and counts the messages it discards because the inbound queue is
    full, so an overload is a visible refusal (``discarded_inbound``), not a silent loss."""

    discarded_inbound = 0

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "pending publish calls" in message:
            return False
        if "Discarding message" in message:
            type(self).discarded_inbound += 1
        return True


QUIET_LOG = _aiomqtt_log = logging.getLogger("edge_agent.mqtt.client")
CLIENT_LOG_FILTER = _ClientLogFilter()
_aiomqtt_log.addFilter(CLIENT_LOG_FILTER)

# Returns False when the message could not be handled durably: it is then not acknowledged,
# and the broker delivers it again after the next reconnect.
# paho leaves Nagle's algorithm on: a small PUBLISH or PUBACK then waits for the previous
# segment's TCP ack (up to 40 ms of delayed ACK). Alerts and lamp commands must not.
NO_DELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)

MessageHandler = Callable[[str, bytes], Awaitable[bool | None]]


@dataclass(frozen=True)
class LinkSettings:
    host: str
    port: int
    client_id: str
    username: str | None = None
    password: str | None = None
    tls: ssl.SSLContext | None = None
    keepalive: int = 30
    reconnect_min: float = 0.5
    reconnect_max: float = 4.0
    will: tuple[str, bytes] | None = None  # last will (retained), e.g. status "offline"
    birth: tuple[str, bytes] | None = None  # sent (retained) after every connect
    clean_session: bool = False
    publish_timeout: float = 10.0
    # Acknowledge an inbound QoS 1 message only after on_message returned (i.e. after the
    # agent committed what it did with it). If the agent dies first, the broker redelivers.
    manual_ack: bool = True
    # Inbound messages waiting to be handled. QoS 1 floods are paced by the broker (unacked
    # messages in flight are capped); QoS 0 beyond this cap is dropped (and logged).
    max_queued_incoming: int = 10_000


def backoff_delay(attempt: int, minimum: float, maximum: float, rand: float) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(max, minimum * 2**attempt)]."""
    ceiling = min(maximum, minimum * (2.0 ** min(attempt, 30)))
    return max(minimum / 10.0, ceiling * rand)


class MqttLink:
    def __init__(
        self,
        name: str,
        settings: LinkSettings,
        subscriptions: Sequence[tuple[str, int]],
        on_message: MessageHandler,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
        on_connect: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self.subscriptions = list(subscriptions)
        self.on_message = on_message
        self._sleep = sleep
        self.on_connect = on_connect
        self._rand = rand
        self._client: aiomqtt.Client | None = None
        self._up = asyncio.Event()
        # publishes waiting for their PUBACK on the current connection: failed at once when
        # it ends (aiomqtt would leave them waiting until publish_timeout, stalling the outbox)
        self._inflight: set[asyncio.Task[None]] = set()
        self.connects = 0
        self.failures = 0
        self.last_error: str | None = None

    @property
    def connected(self) -> bool:
        return self._up.is_set()

    async def wait_connected(self, timeout: float | None = None) -> None:
        try:
            await asyncio.wait_for(self._up.wait(), timeout)
        except TimeoutError:
            raise TransportError(f"{self.name} link not connected within {timeout}s") from None

    def _make_client(self) -> aiomqtt.Client:
        s = self.settings
        will = aiomqtt.Will(s.will[0], s.will[1], qos=1, retain=True) if s.will else None
        client = aiomqtt.Client(
            s.host,
            s.port,
            identifier=s.client_id,
            username=s.username,
            password=s.password,
            tls_context=s.tls,
            keepalive=s.keepalive,
            will=will,
            clean_session=s.clean_session,
            timeout=s.publish_timeout,
            max_inflight_messages=100,
            max_queued_incoming_messages=s.max_queued_incoming,
            socket_options=NO_DELAY,
            logger=_aiomqtt_log,
        )
        if s.manual_ack:
            # aiomqtt does not expose paho's manual acknowledgement; its paho client does.
            client._client.manual_ack_set(True)
        # aiomqtt ignores a connection closed before the CONNACK and waits for its timeout
        # (publish_timeout, 10 s) instead: every such attempt (an uplink that accepts and
        # drops, a broker starting up) delayed the outbox by that much. Fail it at once.
        forward = client._client.on_disconnect

        def on_disconnect(*args: Any, **kwargs: Any) -> None:
            connected = client._connected
            if not connected.done():
                connected.set_exception(aiomqtt.MqttError("connection closed before CONNACK"))
            if forward is not None:
                forward(*args, **kwargs)

        client._client.on_disconnect = on_disconnect
        return client

    async def run(self) -> None:
        """Connect, serve, and reconnect forever (until cancelled)."""
        attempt = 0
        while True:
            client = self._make_client()
            try:
                async with client:
                    self._client = client
                    for topic, qos in self.subscriptions:
                        await client.subscribe(topic, qos=qos)
                    if self.settings.birth:
                        await client.publish(self.settings.birth[0], self.settings.birth[1], qos=1, retain=True)
                    self.connects += 1
                    attempt = 0
                    self.last_error = None
                    self._up.set()
                    if self.on_connect is not None:
                        self.on_connect()
                    log.info(
                        "%s link connected to %s:%s",
                        self.name,
                        self.settings.host,
                        self.settings.port,
                    )
                    async for message in client.messages:
                        payload = message.payload
                        data = payload if isinstance(payload, bytes) else str(payload or "").encode()
                        handled = await self.on_message(str(message.topic), data)
                        if self.settings.manual_ack and message.qos > 0 and handled is not False:
                            client._client.ack(message.mid, message.qos)
            except aiomqtt.MqttError as exc:
                self.failures += 1
                self.last_error = str(exc)
                log.warning("%s link down: %s", self.name, exc)
            finally:
                self._up.clear()
                self._client = None
                for task in list(self._inflight):
                    task.cancel()  # their PUBACKs can no longer come: let the caller retry now
            delay = backoff_delay(attempt, self.settings.reconnect_min, self.settings.reconnect_max, self._rand())
            attempt += 1
            await self._sleep(delay)

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Publish; with QoS 1 return only after PUBACK. TransportError if the link is down."""
        client = self._client
        if client is None or not self._up.is_set():
            raise TransportError(f"{self.name} link is down")
        task = asyncio.ensure_future(
            client.publish(topic, payload, qos=qos, retain=retain, timeout=self.settings.publish_timeout)
        )
        self._inflight.add(task)
        try:
            await task
        except aiomqtt.MqttError as exc:
            raise TransportError(f"{self.name} publish to {topic} failed: {exc}") from None
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task.cancelled() and (current is None or not current.cancelling()):
                raise TransportError(f"{self.name} link lost before the PUBACK for {topic}") from None
            raise
        finally:
            self._inflight.discard(task)
