"""An MQTT link that stays up: aiomqtt plus reconnect, resubscribe and honest status.

Owns: one broker connection (south or north). aiomqtt does not reconnect by itself; ``run``
does, with jittered exponential backoff and a cap, resubscribes, and re-sends the birth
message. ``connected`` is true only while a session is up: a dead link (keepalive missed,
socket closed) flips it to false before any publish could pretend to succeed.
``publish`` with QoS 1 returns only after the broker's PUBACK, and only if that PUBACK says
the broker took the message: under MQTT 5 (the default) a PUBACK with a failure reason code
(an ACL denial, a quota) raises ``PublishRefused`` and is counted in ``refused``. MQTT 3.1.1
has no such code: Mosquitto acknowledges a publish its ACL denies like a delivered one.
Inbound QoS 1 messages are acknowledged only once the handler has dealt with them; when it
cannot (returns False), the link stops reading, disconnects without acknowledging and
resumes its persistent session, so that the broker delivers that message (and the ones after
it) again, in order (``unhandled="redeliver"``); or, for a broker that never delivers an
unacknowledged message again (the embedded amqtt), holds the message and calls the handler
again (``unhandled="retry"``). Either way with backoff, and nothing after it is handled first.
The link reads what is already queued as one batch (up to ``BATCH``), hands each message to
the handler in order, then calls its ``commit`` once (the agent commits the batch's one
transaction) and queues the batch's acknowledgements behind that commit's fsync: they go out,
in order, once it is on disk, while the next batch is already being handled. One commit and
one fsync per batch, and no message waits for another batch's fsync to be handled.
``SYNC`` is what a handler answers for "handled, durable once committed and synced".
Must not import: the engine, the policy, the store or the agent.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.errors import PublishRefused, TransportError
from edge_agent.transports.mqtt_inbound import AckPipeline, share_paho_property_tables

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


share_paho_property_tables()

QUIET_LOG = _aiomqtt_log = logging.getLogger("edge_agent.mqtt.client")
CLIENT_LOG_FILTER = _ClientLogFilter()
_aiomqtt_log.addFilter(CLIENT_LOG_FILTER)

# A handler returns True (handled), False (could not be handled: not acknowledged, the broker
# delivers it again after the next reconnect) or SYNC (handled, durable once ``commit`` says
# so). The link commits before it acknowledges anything, and before it waits for anything.
SYNC: Literal["sync"] = "sync"
# paho leaves Nagle's algorithm on: a small PUBLISH or PUBACK then waits for the previous
# segment's TCP ack (up to 40 ms of delayed ACK). Alerts and lamp commands must not.
NO_DELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)

Handled = bool | Literal["sync"] | None
MessageHandler = Callable[[str, bytes], Awaitable[Handled]]
Commit = Callable[[], bool | Awaitable[bool]]
Outgoing = tuple[str, bytes, int, bool]  # topic, payload, qos, retain

MqttVersion = Literal["5", "3.1.1"]
Unhandled = Literal["redeliver", "retry"]

# MQTT 5 failure reason codes (>= 0x80) of PUBACK and SUBACK, as short countable names.
REASON_NAMES: dict[int, str] = {
    0x80: "unspecified_error",
    0x83: "implementation_specific_error",
    0x87: "not_authorized",
    0x8F: "topic_filter_invalid",
    0x90: "topic_name_invalid",
    0x91: "packet_id_in_use",
    0x97: "quota_exceeded",
    0x99: "payload_format_invalid",
    0x9E: "shared_subscriptions_not_supported",
    0xA1: "subscription_ids_not_supported",
    0xA2: "wildcard_subscriptions_not_supported",
}


def reason_name(code: int) -> str:
    """``not_authorized`` for 0x87; ``reason_0xNN`` for a code MQTT 5 does not define here."""
    return REASON_NAMES.get(code, f"reason_0x{code:02x}")


def _code(value: ReasonCode | int) -> int:
    return value.value if isinstance(value, ReasonCode) else int(value)


@dataclass(eq=False)
class _Connection:
    """One broker connection: its aiomqtt client and the PUBACKs its publishes wait for.

    aiomqtt resolves a publish on PUBACK but drops the PUBACK's reason code (its paho
    ``on_publish`` callback ignores it), so the link sends through paho itself and waits here,
    per message id, for the reason code its own ``on_publish`` wrapper hands over.
    """

    client: aiomqtt.Client
    pubacks: dict[int, asyncio.Future[int]] = field(default_factory=dict)


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
    # "5": refused publishes are told apart (PublishRefused). "3.1.1": a broker may PUBACK a
    # publish it dropped (Mosquitto does for an ACL denial); only for 3.1.1-only brokers.
    protocol: MqttVersion = "5"
    # False: a persistent session (MQTT 5 clean_start=False, 3.1.1 clean_session=False): the
    # broker keeps the subscriptions and the unacknowledged QoS 1 messages across reconnects
    # and agent restarts, and delivers them again when the link comes back.
    clean_session: bool = False
    # MQTT 5 only: how long the broker keeps that session after the link is gone (seconds;
    # 0xFFFFFFFF never expires). Under 3.1.1 the broker's own setting decides.
    session_expiry: int = 7 * 24 * 3600
    publish_timeout: float = 10.0
    # Acknowledge an inbound QoS 1 message only after on_message returned (i.e. after the
    # agent committed what it did with it). If the agent dies first, the broker redelivers.
    manual_ack: bool = True
    # What to do with an inbound QoS 1 message the handler could not handle (returned False).
    # "redeliver": stop, disconnect without acknowledging it, resume the session: the broker
    # delivers it and everything after it again, in order (Mosquitto, EMQX do: MQTT requires
    # it of a resumed session). "retry": hold it and call the handler again, reading nothing
    # else meanwhile: for a broker that drops an unacknowledged message (amqtt does, after 5 s).
    unhandled: Unhandled = "redeliver"
    # Inbound messages waiting to be handled. QoS 1 floods are paced by the broker (unacked
    # messages in flight are capped); QoS 0 beyond this cap is dropped (and logged).
    max_queued_incoming: int = 10_000
    # MQTT 5: QoS 1 messages in flight to the link at once (below max_queued_incoming, so a
    # QoS 1 flood waits at the broker instead of overflowing the queue). 3.1.1 has no such
    # setting: the broker's own (Mosquitto max_inflight_messages, 20) applies.
    receive_maximum: int = 1000


def backoff_delay(attempt: int, minimum: float, maximum: float, rand: float) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(max, minimum * 2**attempt)]."""
    ceiling = min(maximum, minimum * (2.0 ** min(attempt, 30)))
    return max(minimum / 10.0, ceiling * rand)


class MqttLink:
    # how long a deliberate reconnect (inbound message not handled) waits for the PUBACKs of
    # publishes already sent, so that they are not sent again for nothing
    INFLIGHT_GRACE = 1.0

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
        commit: Commit | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self.subscriptions = list(subscriptions)
        self.on_message = on_message
        # commits what the handled messages caused: False (failed), True (nothing to wait
        # for) or an awaitable that resolves once it is on disk (True) or failed (False)
        self.commit = commit
        self._sleep = sleep
        self.on_connect = on_connect
        self._rand = rand
        self._conn: _Connection | None = None
        self._up = asyncio.Event()
        # publishes waiting for their PUBACK on the current connection: failed at once when
        # it ends (they would otherwise wait until publish_timeout, stalling the outbox)
        self._inflight: set[asyncio.Task[Any]] = set()
        self.connects = 0
        self.failures = 0
        self.last_error: str | None = None
        # what the broker refused, by reason: publishes ("not_authorized", "quota_exceeded")
        # and subscriptions ("subscribe_not_authorized")
        self.refused: Counter[str] = Counter()
        # inbound QoS 1 messages the handler could not handle (returned False), each time;
        # consecutive ones back off like failed connects
        self.unhandled = 0
        self._unhandled_streak = 0
        # called with the topic of every publish the broker accepted (the agent counts them)
        self.on_published: Callable[[str], None] | None = None

    @property
    def connected(self) -> bool:
        return self._up.is_set()

    async def wait_connected(self, timeout: float | None = None) -> None:
        try:
            await asyncio.wait_for(self._up.wait(), timeout)
        except TimeoutError:
            raise TransportError(f"{self.name} link not connected within {timeout}s") from None

    def _make_client(self) -> _Connection:
        s = self.settings
        will = aiomqtt.Will(s.will[0], s.will[1], qos=1, retain=True) if s.will else None
        session: dict[str, Any]
        if s.protocol == "5":
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            if not s.clean_session:
                properties.SessionExpiryInterval = s.session_expiry
            # QoS 1 messages the broker may have in flight to us, unacknowledged: it holds the
            # rest (back-pressure), so the inbound queue never overflows and drops one of them
            properties.ReceiveMaximum = s.receive_maximum
            # clean_start False on EVERY connect (aiomqtt's default starts clean on the first
            # connect of a client object, and the link makes a new one per connection)
            session = {
                "protocol": aiomqtt.ProtocolVersion.V5,
                "clean_start": s.clean_session,
                "properties": properties,
            }
        else:
            session = {"protocol": aiomqtt.ProtocolVersion.V311, "clean_session": s.clean_session}
        client = aiomqtt.Client(
            s.host,
            s.port,
            identifier=s.client_id,
            username=s.username,
            password=s.password,
            tls_context=s.tls,
            keepalive=s.keepalive,
            will=will,
            timeout=s.publish_timeout,
            max_inflight_messages=100,
            max_queued_incoming_messages=s.max_queued_incoming,
            socket_options=NO_DELAY,
            logger=_aiomqtt_log,
            **session,
        )
        conn = _Connection(client)
        if s.manual_ack:
            # aiomqtt does not expose paho's manual acknowledgement; its paho client does.
            client._client.manual_ack_set(True)
        # aiomqtt ignores a connection closed before the CONNACK and waits for its timeout
        # (publish_timeout, 10 s) instead: every such attempt (an uplink that accepts and
        # drops, a broker starting up) delayed the outbox by that much. Fail it at once.
        forward_disconnect = client._client.on_disconnect
        pubacks = conn.pubacks

        def on_disconnect(*args: Any, **kwargs: Any) -> None:
            connected = client._connected
            if not connected.done():
                connected.set_exception(aiomqtt.MqttError("connection closed before CONNACK"))
            # PUBACKs can no longer come: fail their publishes now, not at publish_timeout
            for waiter in pubacks.values():
                if not waiter.done():
                    waiter.set_exception(aiomqtt.MqttError("connection lost before the PUBACK"))
            pubacks.clear()
            if forward_disconnect is not None:
                forward_disconnect(*args, **kwargs)

        client._client.on_disconnect = on_disconnect
        # aiomqtt's on_publish drops the PUBACK's reason code: hand it to the waiting publish
        # first (by message id), then let aiomqtt do its part (nothing of ours waits there).
        # paho calls this from loop_read/loop_write, which aiomqtt runs as event loop
        # callbacks: never while ``_send`` is between paho's publish() and registering its
        # waiter (no await there), so the waiter is always in place before its PUBACK is read.
        forward_publish = client._on_publish  # what aiomqtt installed as paho's on_publish

        def on_publish(
            paho_client: paho.Client, userdata: Any, mid: int, reason_code: ReasonCode, properties: Properties
        ) -> None:
            waiter = pubacks.pop(mid, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(_code(reason_code))
            forward_publish(paho_client, userdata, mid, reason_code, properties)

        client._client.on_publish = on_publish
        return conn

    async def run(self) -> None:
        """Connect, serve, and reconnect forever (until cancelled)."""
        attempt = 0
        while True:
            conn = self._make_client()
            client = conn.client
            unhandled = False
            try:
                async with client:
                    self._conn = conn
                    await self._subscribe(client)
                    if self.settings.birth:
                        await self._publish_birth(conn)
                    self.connects += 1
                    attempt = 0
                    self.last_error = None
                    self._up.set()
                    if self.on_connect is not None:
                        self.on_connect()
                    log.info(
                        "%s link connected to %s:%s (MQTT %s)",
                        self.name,
                        self.settings.host,
                        self.settings.port,
                        self.settings.protocol,
                    )
                    unhandled = await self._serve(client)
                    if unhandled:
                        # the message stays unacknowledged; stop publishing on this
                        # connection, let what is in flight get its PUBACK, and leave (a
                        # normal DISCONNECT: the session and its unacked messages stay)
                        self._up.clear()
                        if self._inflight:
                            await asyncio.wait(set(self._inflight), timeout=self.INFLIGHT_GRACE)
            except aiomqtt.MqttError as exc:
                self.failures += 1
                self.last_error = str(exc)
                log.warning("%s link down: %s", self.name, exc)
            finally:
                self._up.clear()
                self._conn = None
                for waiter in conn.pubacks.values():
                    waiter.cancel()
                conn.pubacks.clear()
                for task in list(self._inflight):
                    task.cancel()  # their PUBACKs can no longer come: let the caller retry now
            minimum, maximum = self.settings.reconnect_min, self.settings.reconnect_max
            if unhandled:
                delay = self._unhandled_delay()  # a lasting storage failure: no reconnect storm
            else:
                delay = backoff_delay(attempt, minimum, maximum, self._rand())
                attempt += 1
            await self._sleep(delay)

    def _unhandled_delay(self) -> float:
        delay = backoff_delay(
            self._unhandled_streak, self.settings.reconnect_min, self.settings.reconnect_max, self._rand()
        )
        self._unhandled_streak += 1
        return delay

    # inbound messages handled as one batch: one commit, one fsync, then their acknowledgements
    BATCH = 256

    async def _serve(self, client: aiomqtt.Client) -> bool:
        """Hand inbound messages to the handler and acknowledge them. True when one QoS 1
        message could not be handled (``unhandled="redeliver"``): it and everything after it
        on this connection stay unacknowledged, for the broker to deliver again once the
        session resumes."""
        queue = client._queue  # aiomqtt's inbound queue: what has arrived, not yet handled
        acks = AckPipeline(self, client)
        async for message in client.messages:
            batch = [message]
            while len(batch) < self.BATCH and not queue.empty():
                batch.append(queue.get_nowait())
            if await self._handle_batch(acks, batch):
                return True
        return False

    async def _handle_batch(self, acks: AckPipeline, batch: list[aiomqtt.Message]) -> bool:
        """Handle messages in order, commit them once and queue their acknowledgements behind
        that commit's fsync: the next batch is handled while this one's fsync runs. True: one
        could not be handled and must come again (it and the rest stay unacknowledged)."""
        if acks.failed:
            return True
        retry = self.settings.unhandled == "retry"
        ready: list[aiomqtt.Message] = []  # handled, in order, waiting for the commit and the ack
        for message in batch:
            payload = message.payload
            data = payload if isinstance(payload, bytes) else str(payload or "").encode()
            topic = str(message.topic)
            handled = await self.on_message(topic, data)
            if handled is not False:
                if self.settings.manual_ack and message.qos > 0:
                    ready.append(message)
                continue
            # not handled: what came before it is acknowledged first (in order), then it
            if retry:
                await self._commit_or_redo(acks, ready)
            else:
                acks.add(ready, self._commit())
            if not await acks.settle():
                return True
            ready = []
            if not self.settings.manual_ack or message.qos == 0:
                continue  # acknowledged by paho already (or QoS 0: nothing to acknowledge)
            while handled is False:
                self.unhandled += 1
                if not retry:
                    log.warning(
                        "%s link: message on %s not handled; reconnecting for the broker to deliver it again",
                        self.name,
                        topic,
                    )
                    return True
                log.warning("%s link: message on %s not handled; trying it again", self.name, topic)
                await self._sleep(self._unhandled_delay())
                handled = await self.on_message(topic, data)
            ready = [message]
        if retry:  # a broker that never delivers again: wait for the disk, and on failure redo
            await self._commit_or_redo(acks, ready)
        else:
            acks.add(ready, self._commit())
        return acks.failed

    def _commit(self) -> bool | Awaitable[bool]:
        return True if self.commit is None else self.commit()

    async def _commit_or_redo(self, acks: AckPipeline, ready: list[aiomqtt.Message]) -> None:
        """``unhandled="retry"``: a commit or fsync that failed rolled the batch back, and this
        broker will not deliver it again: handle the messages of ``ready`` again until their
        commit is durable, then acknowledge them."""
        while True:
            durable = self._commit()
            if durable is not True and durable is not False:
                durable = await durable
            if durable:
                acks.add(ready, True)
                return
            self.unhandled += 1
            log.warning("%s link: %d messages not made durable; handling them again", self.name, len(ready))
            await self._sleep(self._unhandled_delay())
            for message in ready:
                payload = message.payload
                data = payload if isinstance(payload, bytes) else str(payload or "").encode()
                while await self.on_message(str(message.topic), data) is False:
                    await self._sleep(self._unhandled_delay())

    async def _subscribe(self, client: aiomqtt.Client) -> None:
        for topic, qos in self.subscriptions:
            granted = await client.subscribe(topic, qos=qos)
            for value in granted:
                code = _code(value)
                if code >= 0x80:
                    reason = reason_name(code)
                    self.refused["subscribe_" + reason] += 1
                    log.error(
                        "%s link: the broker refused the subscription to %s: %s (0x%02x)",
                        self.name,
                        topic,
                        reason,
                        code,
                    )

    async def _publish_birth(self, conn: _Connection) -> None:
        assert self.settings.birth is not None
        topic, payload = self.settings.birth
        (code,) = await self._send_many(conn, [(topic, payload, 1, True)])
        if isinstance(code, Exception):
            raise code  # no PUBACK: the link is not up after all
        if code >= 0x80:  # a refused birth message is not a dead link: log, count, serve
            self._refusal(code, topic)

    async def _send_many(self, conn: _Connection, messages: Sequence[Outgoing]) -> list[int | Exception]:
        """``_send`` for many messages at once: all handed to paho in order, then one wait for
        their PUBACKs (no task per message). Each entry: its reason code, or why it failed."""
        loop = asyncio.get_running_loop()
        entries: list[int | Exception | tuple[int, asyncio.Future[int]]] = []
        for topic, payload, qos, retain in messages:
            info = conn.client._client.publish(topic, payload, qos, retain)
            if info.rc != paho.MQTT_ERR_SUCCESS:
                entries.append(aiomqtt.MqttCodeError(info.rc, "Could not publish message"))
            elif info.is_published():  # sent already, so no waiter could see the reason code
                entries.append(0 if qos == 0 else aiomqtt.MqttError("PUBACK handled before its waiter"))
            else:
                waiter: asyncio.Future[int] = loop.create_future()
                conn.pubacks[info.mid] = waiter
                entries.append((info.mid, waiter))
        waiters = [entry[1] for entry in entries if isinstance(entry, tuple)]
        try:
            if waiters:
                await asyncio.wait(waiters, timeout=self.settings.publish_timeout)
        finally:
            for entry in entries:
                if isinstance(entry, tuple) and conn.pubacks.get(entry[0]) is entry[1]:
                    del conn.pubacks[entry[0]]
        results: list[int | Exception] = []
        for entry in entries:
            if not isinstance(entry, tuple):
                results.append(entry)
            elif entry[1].cancelled():
                results.append(aiomqtt.MqttError("link lost before the PUBACK"))
            elif entry[1].done():  # a PUBACK's reason code, or why none can come (the link lost)
                failure = entry[1].exception()
                results.append(entry[1].result() if failure is None else aiomqtt.MqttError(str(failure)))
            else:
                results.append(aiomqtt.MqttError(f"no PUBACK within {self.settings.publish_timeout}s"))
        return results

    async def publish_many(self, messages: Sequence[Outgoing]) -> list[Exception | None]:
        """Publish ``(topic, payload, qos, retain)`` in order on this connection and wait for
        every PUBACK; per message None (the broker took it) or why not: ``PublishRefused``
        (its PUBACK said no), ``TransportError`` (no PUBACK: the link went down, a timeout).
        TransportError if the link is down before the first one."""
        conn = self._conn
        if conn is None or not self._up.is_set():
            raise TransportError(f"{self.name} link is down")
        task = asyncio.ensure_future(self._send_many(conn, messages))
        self._inflight.add(task)
        try:
            codes = await task
        except aiomqtt.MqttError as exc:
            raise TransportError(f"{self.name} publish failed: {exc}") from None
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task.cancelled() and (current is None or not current.cancelling()):
                raise TransportError(f"{self.name} link lost before the PUBACKs") from None
            raise
        finally:
            self._inflight.discard(task)
        results: list[Exception | None] = []
        for (topic, _, _, _), code in zip(messages, codes, strict=True):
            if isinstance(code, Exception):
                results.append(TransportError(f"{self.name} publish to {topic} failed: {code}"))
            elif code >= 0x80:
                results.append(self._refusal(code, topic))
            else:
                results.append(None)
                if self.on_published is not None:
                    self.on_published(topic)
        return results

    def _refusal(self, code: int, topic: str) -> PublishRefused:
        reason = reason_name(code)
        self.refused[reason] += 1
        log.error("%s link: the broker refused a publish to %s: %s (0x%02x)", self.name, topic, reason, code)
        return PublishRefused(code, reason, topic=topic, link=self.name)

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Publish; with QoS 1 return only after a PUBACK that accepts the message.

        TransportError if the link is down or goes down before the PUBACK; PublishRefused
        (a TransportError) if the PUBACK carries a failure reason code (MQTT 5 only).
        """
        (failure,) = await self.publish_many([(topic, payload, qos, retain)])
        if failure is not None:
            raise failure
