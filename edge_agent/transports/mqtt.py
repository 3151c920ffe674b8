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
The handler's answers (``SYNC``: "handled, durable once committed and synced") and the
``Link`` seam the agent sees: edge_agent/transports/link.py. The settings: ``mqtt_settings``;
one connection's client and its PUBACK reason codes: ``mqtt_client``; acknowledgements behind
the commit: ``mqtt_inbound``.
Must not import: the engine, the policy, the store or the agent.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import aiomqtt

from edge_agent.errors import PublishRefused, TransportError
from edge_agent.transports.link import Commit, MessageHandler, Outgoing, raise_if_cancelled
from edge_agent.transports.mqtt_client import (
    Connection,
    Inbound,
    make_connection,
    reason_code_value,
    reason_name,
    send_many,
)
from edge_agent.transports.mqtt_inbound import AckPipeline
from edge_agent.transports.mqtt_settings import LinkSettings, backoff_delay

log = logging.getLogger(__name__)


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
        self._conn: Connection | None = None
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
        self.unhandled_streak = 0
        # called with the topic of every publish the broker accepted (the agent counts them)
        self.on_published: Callable[[str], None] | None = None

    @property
    def connected(self) -> bool:
        return self._up.is_set()

    @property
    def address(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    async def wait_connected(self, timeout: float | None = None) -> None:
        try:
            async with asyncio.timeout(timeout):  # (3.11's wait_for can swallow a cancellation)
                await self._up.wait()
        except TimeoutError:
            raise TransportError(f"{self.name} link not connected within {timeout}s") from None

    async def run(self) -> None:
        """Connect, serve, and reconnect forever (until cancelled)."""
        attempt = 0
        while True:
            conn = make_connection(self.settings)
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
                raise_if_cancelled()  # a stop that met a failing connect is not lost
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
            self.unhandled_streak, self.settings.reconnect_min, self.settings.reconnect_max, self._rand()
        )
        self.unhandled_streak += 1
        return delay

    # inbound messages handled as one batch: one commit, one fsync, then their acknowledgements
    BATCH = 256

    async def _serve(self, client: aiomqtt.Client) -> bool:
        """Hand inbound messages to the handler and acknowledge them. True when one QoS 1
        message could not be handled (``unhandled="redeliver"``): it and everything after it
        on this connection stay unacknowledged, for the broker to deliver again once the
        session resumes."""
        # aiomqtt's inbound queue: what has arrived, not yet handled (as ``Inbound``:
        # mqtt_client.pass_messages_through)
        queue = cast("asyncio.Queue[Inbound]", client._queue)
        acks = AckPipeline(self, client)
        async for message in client.messages:
            batch = [cast(Inbound, message)]
            while len(batch) < self.BATCH and not queue.empty():
                batch.append(queue.get_nowait())
            if await self._handle_batch(acks, batch):
                return True
        return False

    async def _handle_batch(self, acks: AckPipeline, batch: list[Inbound]) -> bool:
        """Handle messages in order, commit them once and queue their acknowledgements behind
        that commit's fsync: the next batch is handled while this one's fsync runs. True: one
        could not be handled and must come again (it and the rest stay unacknowledged)."""
        if acks.failed:
            return True
        retry = self.settings.unhandled == "retry"
        ready: list[Inbound] = []  # handled, in order, waiting for the commit and the ack
        for message in batch:
            topic, data = message.topic, message.payload
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

    async def _commit_or_redo(self, acks: AckPipeline, ready: list[Inbound]) -> None:
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
                while await self.on_message(message.topic, message.payload) is False:
                    await self._sleep(self._unhandled_delay())

    async def _subscribe(self, client: aiomqtt.Client) -> None:
        for topic, qos in self.subscriptions:
            granted = await client.subscribe(topic, qos=qos)
            for value in granted:
                code = reason_code_value(value)
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

    async def _publish_birth(self, conn: Connection) -> None:
        assert self.settings.birth is not None
        topic, payload = self.settings.birth
        (code,) = await send_many(conn, [(topic, payload, 1, True)], self.settings.publish_timeout)
        if isinstance(code, Exception):
            raise code  # no PUBACK: the link is not up after all
        if code >= 0x80:  # a refused birth message is not a dead link: log, count, serve
            self._refusal(code, topic)

    async def publish_many(self, messages: Sequence[Outgoing]) -> list[Exception | None]:
        """Publish ``(topic, payload, qos, retain)`` in order on this connection and wait for
        every PUBACK; per message None (the broker took it) or why not: ``PublishRefused``
        (its PUBACK said no), ``TransportError`` (no PUBACK: the link went down, a timeout).
        TransportError if the link is down before the first one."""
        conn = self._conn
        if conn is None or not self._up.is_set():
            raise TransportError(f"{self.name} link is down")
        task = asyncio.ensure_future(send_many(conn, messages, self.settings.publish_timeout))
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
