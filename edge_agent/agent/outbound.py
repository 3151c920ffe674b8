"""What leaves the gateway because the engine decided it: outbox rows, lamp commands, alarms.

Owns: turning engine effects into outbox rows (inside the caller's transaction) and lamp
commands; the platform's messages (alerts, rule events, lamp telemetry, policy acks) with our
id and a per-device sequence number; alert messages to responders; the outbox drain loop of
each link (the local alarm is ``alarm.py``).
Must not import: the app or the intake.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable
from typing import Any, ClassVar

import msgspec

from edge_agent.agent import topics
from edge_agent.agent.channels import Channels
from edge_agent.agent.context import GatewayContext
from edge_agent.agent.lamps import Lamps
from edge_agent.engine import AlertChanged, Effect, LampSet, NotifyResponder, PublishRequest, SendRequest
from edge_agent.errors import PublishRefused, TransportError
from edge_agent.models import Alert, AlertMessage, PolicyAck, encode
from edge_agent.store.outbox import ALERT_PRIORITY, EVENT_PRIORITY, TELEMETRY_PRIORITY, OutboxMessage, new_id
from edge_agent.transports.link import Link, raise_if_cancelled

log = logging.getLogger("edge_agent")


class Outbound:
    DRAIN_WINDOW = 64  # outbox messages in flight at once per link

    def __init__(self, context: GatewayContext, lamps: Lamps) -> None:
        self.gateway = context.gateway
        self.background = context.background  # sends without an outbox
        self.clock = context.clock
        self.store = context.store
        self.active = context.active
        self.links = context.links
        self.lamps = lamps
        self.unflushed = context.unflushed
        self.stats = context.stats
        self.alarm = context.alarm
        self._alarmed: set[tuple[str, str, str]] = set()  # (link, reason, topic class) already alarmed
        self.on_effect: Callable[[Effect], None] | None = None  # observers (demo timeline)
        self.channels = Channels(context)  # how a notification step reaches its responder

    # ----- effects --------------------------------------------------------------------------
    def apply(self, effects: list[Effect]) -> None:
        """Turn effects into outbox rows (inside the caller's transaction) and lamp commands."""
        now = self.clock.now()
        for effect in effects:
            self.stats.effects += 1
            if self.on_effect is not None:
                self.on_effect(effect)
            if isinstance(effect, LampSet):
                self.unflushed.desired[effect.lamp] = {"level": effect.level, "reason": effect.reason}
                self.lamps.send(effect)
            elif isinstance(effect, NotifyResponder):
                self.stats.notifications += 1
                self.channels.plan(effect, now)
            elif isinstance(effect, AlertChanged):
                self._count_alert(effect.alert)
                if self.links.north is not None:
                    body = msgspec.to_builtins(self.alert_message(effect.alert))
                    self._enqueue_north(topics.alert(self.gateway), body, effect.alert.device, ALERT_PRIORITY)
            elif isinstance(effect, PublishRequest):
                device = str(effect.payload.get("device", "gateway"))
                topic = topics.event(self.gateway, effect.topic)
                self._enqueue_north(topic, dict(effect.payload), device, EVENT_PRIORITY)
            elif isinstance(effect, SendRequest):
                self._send(effect, now)

    def _send(self, effect: SendRequest, now: float) -> None:
        """A rule's ``send``: exactly the rendered payload, to its own topic. ``north`` goes
        to the south broker when there is no uplink (like every platform topic)."""
        name = effect.link if effect.link == "south" or self.links.north is not None else "south"
        self.stats.sends[name] += 1
        if effect.outbox:
            self.store.outbox.enqueue(
                name,
                effect.topic,
                effect.payload,
                priority=EVENT_PRIORITY,
                now=now,
                qos=effect.qos,
                retain=effect.retain,
            )
            self.links.wake[name].set()
            return
        link = self.links.south if name == "south" else self.links.north
        if link is None or not link.connected:
            self.stats.sends_dropped[name] += 1  # best effort, as configured: counted, not kept
            return
        self.background.spawn(self._send_once(link, effect))

    async def _send_once(self, link: Link, effect: SendRequest) -> None:
        try:
            await link.publish(effect.topic, effect.payload, qos=effect.qos, retain=effect.retain)
        except TransportError as exc:
            self.stats.sends_dropped[link.name] += 1
            log.info("send to %s not delivered (no outbox): %s", effect.topic, exc)

    def _count_alert(self, alert: Alert) -> None:
        """For the metrics: a new alert is "raised" (no chain) or "notified" at step 0 (its
        first responder); escalations, acks and exhausted chains are later changes."""
        status = alert.status
        self.stats.alert_changes[status] += 1
        # an alert's first change is at its creation: raised (no chain), notified (at whatever
        # step has a free responder) or queued (nobody free); later changes carry a later time
        if status == "raised" or (status in ("notified", "queued") and alert.updated == alert.created):
            self.stats.alerts_raised += 1

    def telemetry(self, lamp: str, values: dict[str, Any]) -> None:
        """A lamp's state report for the platform (inside the caller's transaction); uplink only."""
        if self.links.north is not None:
            self._enqueue_north(topics.telemetry_lamp(self.gateway, lamp), dict(values), lamp, TELEMETRY_PRIORITY)

    def policy_ack(self, ack: PolicyAck) -> None:
        """The answer to a policy bundle, for the centre (north, or south without an uplink)."""
        link = self.links.uplink
        with self.store.transaction():
            self.store.outbox.enqueue(
                link, topics.policy_ack(self.gateway), encode(ack), priority=EVENT_PRIORITY, now=self.clock.now()
            )
        self.links.wake[link].set()

    def _enqueue_north(self, topic: str, body: dict[str, Any], device: str, priority: int) -> None:
        """Queue a message for the platform with our own id and a per-device sequence number.

        ``msg_id`` identifies the message across retries (receivers drop duplicates by it);
        ``seq`` counts per device, so a receiver can tell a gap from a reordering. Without an
        uplink, events go to the local broker; alerts stay in the local alert table.
        """
        link = self.links.uplink
        msg_id = new_id()
        body.update(v=1, msg_id=msg_id, seq=self.store.outbox.next_seq(f"{link}.{device}"), gateway=self.gateway)
        self.store.outbox.enqueue(
            link, topic, msgspec.json.encode(body), priority=priority, now=self.clock.now(), msg_id=msg_id
        )
        self.links.wake[link].set()

    def alert_message(self, alert: Alert) -> AlertMessage:
        return self.channels.alert_message(alert)

    # ----- the outbox -----------------------------------------------------------------------
    # A message a broker refused (MQTT 5 PUBACK reason >= 0x80) stays in the outbox and is
    # offered again after this long: a quota clears by itself, an ACL or topic refusal needs
    # an operator (the alarm says which), and retrying it every second would only fill logs.
    REFUSED_RETRY_S: ClassVar[dict[str, float]] = {"quota_exceeded": 30.0}
    REFUSED_RETRY_DEFAULT_S = 300.0

    async def drain(self, name: str, link: Link) -> None:
        """Send the outbox in order (alerts first); a message leaves it only after PUBACK.

        Up to a window of publishes is in flight at once, issued in outbox order on one
        connection (so the broker sees them in order). Only the unbroken prefix of
        acknowledged messages is deleted: after a failure everything from the first
        unacknowledged message on is sent again (receivers drop duplicates by message id).
        A message the broker refused (its PUBACK says why) is never deleted as delivered: it is
        parked, counted and alarmed (:meth:`_refused`), and the messages behind it go on.
        A batch holding an alert is published only once the store's fsync covers it.
        """
        wake = self.links.wake[name]
        while True:
            raise_if_cancelled()  # (a library may have turned a stop into an error we caught)
            await link.wait_connected()
            batch = self.store.outbox.pending(name, limit=self.DRAIN_WINDOW, now=self.clock.now())
            if not batch:
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):  # (3.11's wait_for can swallow a cancellation)
                        await wake.wait()
                continue
            if any(m.priority == ALERT_PRIORITY for m in batch) and not await self._synced(name):
                continue
            try:
                results = await link.publish_many([(m.topic, m.payload, m.qos, m.retain) for m in batch])
            except TransportError as exc:
                log.info("%s outbox paused: %s", name, exc)
                await asyncio.sleep(0.05)
                continue
            done: list[int] = []
            handed: list[str] = []  # notifications among them: handed to their channel
            interrupted = False
            for message, result in zip(batch, results, strict=True):
                if isinstance(result, PublishRefused):
                    self._refused(name, message, result)
                    continue
                if result is not None:
                    log.info("%s outbox paused: %s", name, result)
                    interrupted = True
                    break
                done.append(message.seq)
                if message.priority == ALERT_PRIORITY and name != "north":
                    handed.append(message.msg_id)
            with self.store.transaction(durable=False):
                self.store.outbox.forget(done)
                if handed:
                    self.store.notifications.handed(handed, self.clock.now())
            self.stats.published[name] += len(done)
            if interrupted:
                await asyncio.sleep(0.05)

    async def _synced(self, name: str) -> bool:
        """Wait until every commit so far is on disk (group commit: at once when it is), so no
        alert leaves the gateway before the fsync that keeps it. False: the fsync failed (the
        store's own alarm says so); paused a moment."""
        try:
            await self.store.sync()
        except sqlite3.Error as exc:
            log.warning("%s outbox paused: its alerts are not on disk: %s", name, exc)
            await asyncio.sleep(1.0)
            return False
        return True

    def _refused(self, name: str, message: OutboxMessage, refusal: PublishRefused) -> None:
        retry_s = self.REFUSED_RETRY_S.get(refusal.reason, self.REFUSED_RETRY_DEFAULT_S)
        self.store.outbox.park(message.seq, refusal.reason, self.clock.now() + retry_s)
        self.stats.refused[f"{name}.{refusal.reason}"] += 1
        found = topics.match(self.gateway, message.topic)
        topic_class = found[0].name if found is not None else "other"
        if (name, refusal.reason, topic_class) not in self._alarmed:  # once per kind of refusal
            self._alarmed.add((name, refusal.reason, topic_class))
            self.alarm.sound(
                f"{name}_refused",
                f"the {name} broker refused {message.topic}: {refusal.reason} (0x{refusal.reason_code:02X}); "
                f"kept in the outbox, retried every {retry_s:.0f} s (check the broker's ACL and quotas)",
            )
