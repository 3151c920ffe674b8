"""Inbound routing: every message and device event the gateway receives, up to its commit.

Owns: decoding south messages into typed events (or rejecting and counting them), responder
acknowledgements, handing policy envelopes on, and ``handle_event``: engine, effects and
outbox in one SQLite transaction, for events from any transport (MQTT, Modbus bus, dongle).

The hand-off rule: a message is acknowledged (the MQTT link's PUBACK, a serial event's
``commit_event`` returning) only after what it caused is committed and, when that transaction
was durable (alert-related), on disk. MQTT messages a link reads together share one store
batch (``receive_south`` opens it, a savepoint each); the link then calls ``commit`` once and
acknowledges the batch when the awaitable it returns says the commit is on disk. A storage
failure raises the local alarm and leaves the message (and, for a failed commit, its whole
batch) unacknowledged, so the broker delivers it again; a message that breaks the agent
itself is kept in the store's dead letters, never dropped, and sounds the alarm; an SOS or a
fall that breaks it still raises an alert, by the fallback path (edge_agent/agent/recovery.py),
committed and synced before the acknowledgement.

Memory follows the store: what a lamp last reported (its faults, its policy version) is kept
in memory only once the transaction that handled it has committed, so a redelivery after a
failed commit is judged afresh (its fault alert raised then); after a failed commit or a
handling that raised, the engine (its timers and dispatch) is rebuilt from the store.
Must not import: the app, the transports' internals.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from edge_agent.agent import topics
from edge_agent.agent.context import GatewayContext
from edge_agent.agent.drops import DropWatch
from edge_agent.agent.outbound import Outbound
from edge_agent.agent.recovery import fresh_engine, is_emergency, raise_fallback
from edge_agent.agent.rollout import RolloutTracker
from edge_agent.agent.runtime import topic_class
from edge_agent.engine import Effect, Engine
from edge_agent.errors import ProtocolError
from edge_agent.models import (
    SOUTH_SCHEMAS,
    CameraEvent,
    DeviceStatus,
    Event,
    Heartbeat,
    LampState,
    ResponderAck,
    ResponderResolved,
    WearableEvent,
    WearableVitals,
    check_device_time,
    decode_payload,
)
from edge_agent.transports.link import SYNC, Handled

if TYPE_CHECKING:
    from edge_agent.agent.foreign import ForeignTopics
    from edge_agent.agent.homeassistant import HomeAssistant
    from edge_agent.agent.shadow import Shadow

log = logging.getLogger("edge_agent")


class Intake:
    def __init__(
        self,
        context: GatewayContext,
        *,
        outbound: Outbound,
        rollout: RolloutTracker,
        on_policy: Callable[[bytes], Awaitable[None]],
        homeassistant: HomeAssistant | None = None,
        shadow: Shadow | None = None,
        foreign: ForeignTopics | None = None,
    ) -> None:
        self.site = site = context.site
        self.gateway = site.gateway
        self.devices = site.devices
        self.clock = context.clock
        self.store = context.store
        self.active = context.active
        self.outbound = outbound
        self.alarm = context.alarm
        self.rollout = rollout
        self.on_policy = on_policy
        self.timers_changed = context.timers_changed
        self.unflushed = context.unflushed
        self.stats = context.stats
        self.max_payload = context.limits.max_payload_bytes
        self.homeassistant = homeassistant  # [homeassistant] enabled: its commands and births
        self.shadow = shadow  # [shadow]: fed each committed input, after the commit
        self.foreign = foreign  # [[foreign_topics]]: devices with a topic schema of their own
        self.policy_topic = topics.policy(site.gateway)
        self.drops = DropWatch(
            context.alarm, self.stats, self.clock, self.store
        )  # seq gaps and the broker's dropped counter
        self._last_faults: dict[str, int] = {}  # committed lamp reports' fault bits
        self._uncommitted: list[Event] = []  # lamp reports of the open batch: remembered at its commit
        self._engine_stale = False  # the engine's memory may be ahead of the store: rebuild it
        self._event: Event | None = None  # the event being handled (for the fallback path)
        self._needs_sync = False  # a durable transaction was committed since the last commit()
        self._rolled_back = False  # a batch commit failed since the link last committed

    # ----- MQTT handlers --------------------------------------------------------------------
    async def on_south(self, topic: str, payload: bytes) -> bool:
        """Handle one inbound message. True: acknowledge it to the broker (what it caused is
        committed and, if durable, on disk). False: it could not be stored and must come again."""
        handled = await self.receive_south(topic, payload)
        durable = await self.flush()  # closes the batch in any case
        return durable and handled is not False

    async def receive_south(self, topic: str, payload: bytes) -> Handled:
        """The link's handler: like ``on_south`` but it does not wait for the disk. Messages
        handled one after another share one open store batch (one SQLite transaction, a
        savepoint each); ``SYNC`` means handled in it, to be acknowledged once the link's
        next ``commit`` (the batch's COMMIT and, if any of it was durable, one fsync) is done."""
        self.stats.received += 1
        self.stats.received_by_class[topic_class(self.gateway, topic)] += 1
        if topic == self.policy_topic:  # verifying and installing a policy awaits: no batch
            if not await self._commit_batch():
                return False
            await self.on_policy(payload)
            self._needs_sync = True
            return SYNC
        self._event = None
        try:
            self.store.begin_batch()
            self._needs_sync = self._route(topic, payload) or self._needs_sync
        except ProtocolError as exc:
            self._reject(exc.reason, str(exc))
        except sqlite3.Error as exc:  # its savepoint is rolled back; what came before stays
            self._engine_stale = True
            self.alarm.sound("storage", f"cannot store what {topic} caused: {exc}")
            return False
        except Exception as exc:  # one bad message must never take the link down, nor be lost
            log.exception("internal error on %s", topic)
            self._engine_stale = True
            if not await self._commit_batch():
                return False
            return await self._internal_error(topic, payload, exc, self._event)
        return SYNC

    async def receive_north(self, topic: str, payload: bytes) -> Handled:
        """The uplink carries the centre's policy, and the foreign topics set on ``north``."""
        if topic != self.policy_topic and not (self.foreign and self.foreign.matches(topic)):
            self.stats.received += 1
            self.stats.received_by_class[topic_class(self.gateway, topic)] += 1
            return True
        return await self.receive_south(topic, payload)

    def commit(self) -> bool | Awaitable[bool]:
        """The link's ``commit``: commit the open batch now. False: it failed (rolled back,
        alarm sounded); True: nothing handled since the last commit needs the disk; else an
        awaitable that resolves True once it is on disk (False, and the alarm, if not)."""
        if self._rolled_back:  # a commit before a policy or dead letter failed: not these either
            self._rolled_back = False
            return False
        try:
            durable = self.store.commit_batch() or self._needs_sync
        except sqlite3.Error as exc:  # rolled back: none of the batch's messages was handled
            self._needs_sync = False
            self._rolled_back_batch()
            self.alarm.sound("storage", f"cannot commit what was received: {exc}")
            return False
        self._needs_sync = False
        self._committed_batch()
        if not durable:
            return True
        try:
            future = self.store.synced()
        except Exception as exc:
            self.alarm.sound("storage", f"cannot make what was received durable: {exc}")
            return False
        return True if future is None else self._on_disk(future)

    async def _on_disk(self, future: Awaitable[None]) -> bool:
        try:
            await future
        except Exception as exc:
            self.alarm.sound("storage", f"cannot make what was received durable: {exc}")
            return False
        return True

    async def flush(self) -> bool:
        """``commit``, then wait for the disk: True once what was handled is durable."""
        durable = self.commit()
        return durable if isinstance(durable, bool) else await durable

    async def _commit_batch(self) -> bool:
        """Commit the open batch before something that awaits (a policy, a dead letter)."""
        try:
            self._needs_sync = self.store.commit_batch() or self._needs_sync
        except sqlite3.Error as exc:  # rolled back: the messages handled since the last commit too
            self._needs_sync = False
            self._rolled_back = True  # so the link's next commit says they were not handled
            self._rolled_back_batch()
            self.alarm.sound("storage", f"cannot commit what was received: {exc}")
            return False
        self._committed_batch()
        return True

    def _committed_batch(self) -> None:
        for event in self._uncommitted:
            self._remember(event)
        self._uncommitted.clear()

    def _rolled_back_batch(self) -> None:
        """The batch's changes are gone from the store: from memory too."""
        self._uncommitted.clear()
        self._engine_stale = True
        try:
            self._current_engine()
        except sqlite3.Error as exc:  # the store still fails: rebuilt before the engine's next use
            log.warning("engine not rebuilt after a failed commit yet: %s", exc)

    def _current_engine(self) -> Engine:
        """The engine in force, first rebuilt from the store if its memory may be ahead of it."""
        active = self.active
        if self._engine_stale:
            with self.store.transaction():
                engine, effects = fresh_engine(
                    active.engine, active.engine.policy, self.site, self.store, self.clock.now()
                )
                self.outbound.apply(effects)
            active.engine, self._engine_stale = engine, False
            self.timers_changed.set()
        return active.engine

    async def _internal_error(self, where: str, payload: bytes, exc: Exception, event: Event | None) -> bool:
        """Handling raised an unexpected error (a bug): an SOS or fall still raises its alert
        by the fallback path; the raw input is kept for a human; the alarm sounds. True once
        all that is committed and on disk (the input may be acknowledged)."""
        raised = ""
        try:
            engine = self._current_engine()
            if is_emergency(event):
                assert event is not None
                with self.store.transaction():
                    if self._first_time(event):
                        effects: list[Effect] = []
                        raised = raise_fallback(engine, event, effects).alert_id
                        self.outbound.apply(effects)
                self.timers_changed.set()
        except Exception:
            self._engine_stale = True
            log.exception("the fallback alert for %s failed too", where)
        try:
            with self.store.transaction():
                self.store.inbox.dead_letter(where, payload, f"{type(exc).__name__}: {exc}", self.clock.now())
            await self.store.sync()
        except Exception:
            log.exception("cannot keep the message from %s as a dead letter", where)
            self.alarm.sound("internal", f"{where} broke the agent and cannot be kept: {exc!r}")
            return False
        self._reject("internal", where)
        fallback = f"; fallback alert {raised} raised" if raised else ""
        self.alarm.sound("internal", f"{where} broke the agent ({exc!r}), kept as a dead letter{fallback}")
        return True

    def _reject(self, reason: str, text: str) -> None:
        self.stats.rejected[reason] += 1
        self.unflushed.rejects[reason] += 1
        log.warning("rejected %s", text)

    def _route(self, topic: str, payload: bytes) -> bool:
        """Handle one message (not the policy); True when its transaction was durable."""
        if topic == topics.BROKER_DROPPED:
            return self.drops.broker_counter(payload)
        if self.homeassistant is not None:
            handled = self.homeassistant.route(topic, payload)
            if handled is not None:
                return handled
        event = self._decode_south(topic, payload)
        if event is None:
            return False
        if isinstance(event, ResponderResolved | ResponderAck):
            parts = topics.split(self.gateway, topic)
            responder = parts[1] if parts else "?"
            if isinstance(event, ResponderResolved):  # the responder is available again
                self.resolve(event.alert_id, responder)
            else:
                self.acknowledge(event.alert_id, responder)
            return True
        return self.handle_event(event)

    # ----- a person's answer, from the app topic or a reply SMS (edge_agent/agent/replies.py) --
    def acknowledge(self, alert_id: str, responder: str) -> bool:
        """The responder takes the alert: escalation stops. False: it changed nothing (unknown,
        repeated, or not this responder's to take). Durable once the store syncs."""
        now = self.clock.now()
        engine = self._current_engine()
        with self.store.transaction():
            acked = engine.acknowledge(alert_id, responder, now)
            self.outbound.apply(acked)
        if self.shadow is not None:
            self.shadow.on_ack(alert_id, responder, now, acked)
        return bool(acked)

    def unreachable(self, alert_id: str, responder: str) -> bool:
        """No channel reached the notified responder: the chain's next step now. False: it
        changed nothing (answered, escalated or closed meanwhile)."""
        engine = self._current_engine()
        with self.store.transaction():
            escalated = engine.unreachable(alert_id, responder, self.clock.now())
            self.outbound.apply(escalated)
        self.timers_changed.set()
        return bool(escalated)

    def resolve(self, alert_id: str, responder: str) -> bool:
        """The busy responder is done: available again. False: it changed nothing."""
        engine = self._current_engine()
        with self.store.transaction():
            resolved = engine.resolve(alert_id, responder, self.clock.now())
            self.outbound.apply(resolved)
        self.timers_changed.set()
        return bool(resolved)

    # ----- device events, from any transport ------------------------------------------------
    async def commit_event(self, event: Event) -> None:
        """``handle_event``, then wait until a durable transaction is on disk: when this
        returns, the device may be told "got it"."""
        try:
            durable = self.handle_event(event)
        except sqlite3.Error:
            self._engine_stale = True
            raise
        except Exception as exc:  # a bug: the same fallback as for a message; no ACK unless kept
            log.exception("internal error on %s %s", event.kind, event.device)
            self._engine_stale = True
            raw = repr((event.kind, event.device, event.name, event.data)).encode()
            if not await self._internal_error(f"{event.kind}/{event.device}/{event.name}", raw, exc, event):
                raise
            return
        if durable:
            await self.store.sync()

    def handle_event(self, event: Event) -> bool:
        """One typed device event, from any transport (MQTT, Modbus bus, dongle): engine,
        effects and outbox in one transaction. Lamps on a bus and MQTT lamps meet here.

        Returns True when the transaction was durable (the caller awaits ``Store.sync``
        before acknowledging)."""
        self._event = event
        events = [event]
        self.stats.last_seen[event.device] = (event.ts, event.name)
        lamp_state = event.kind == "lamp" and event.name == "state"
        if lamp_state:
            faults = int(event.data.get("faults", 0))
            if faults and faults != self._known_faults(event.device):
                events.append(Event(event.device, "lamp", "fault", event.ts, event.zone, event.group, dict(event.data)))
        engine = self._current_engine()
        durable = any(one.name in engine.durable_events for one in events)
        with self.store.transaction(durable=durable):
            if not self._first_time(event):
                self.stats.duplicates += 1  # a redelivery of a message already handled
                return durable
            self.store.history.record(event)  # what twin/calibrate fits: same commit
            self.drops.observe(event)
            decided: list[Effect] = []
            for one in events:
                effects = engine.handle(one)
                self.outbound.apply(effects)
                decided += effects
            if lamp_state:
                self.outbound.telemetry(event.device, event.data)
        if lamp_state:  # remembered once committed: at once, or at the batch's COMMIT
            (self._uncommitted.append if self.store.in_batch else self._remember)(event)
        self.timers_changed.set()
        if self.shadow is not None:
            self.shadow.on_events(events, decided)
        if self.homeassistant is not None:
            self.homeassistant.observe(event)
        return durable

    def _first_time(self, event: Event) -> bool:
        """False for a redelivery of an event already handled (by its sequence number)."""
        seq = event.data.get("seq") if event.kind == "wearable" else None
        boot, link_seq = event.data.get("boot"), event.data.get("link_seq")
        if isinstance(boot, str) and isinstance(link_seq, int):
            return self.store.inbox.first_dongle_frame(boot, link_seq, event.ts)
        return not isinstance(seq, int) or self.store.inbox.first_time(event.device, seq, event.ts)

    def _known_faults(self, device: str) -> int:
        """The fault bits ``device`` last reported: in the open batch, else committed."""
        for event in reversed(self._uncommitted):
            if event.device == device:
                return int(event.data.get("faults", 0))
        return self._last_faults.get(device, 0)

    def _remember(self, event: Event) -> None:
        """A committed lamp report: its faults, its values for the flush, its policy version."""
        self._last_faults[event.device] = int(event.data.get("faults", 0))
        self.unflushed.reported[event.device] = dict(event.data)
        version = event.data.get("policy_version")
        self.rollout.report(event.device, version if isinstance(version, int) else None)

    def _decode_south(self, topic: str, payload: bytes) -> Event | ResponderAck | ResponderResolved | None:
        if len(payload) > self.max_payload:
            raise ProtocolError("oversized", where=topic, detail=f"{len(payload)} bytes")
        parts = topics.split(self.gateway, topic)
        if parts is None:
            event = self.foreign.decode(topic, payload, self.clock.now()) if self.foreign else None
            if event is None:
                raise ProtocolError("unknown_topic", where=topic)
            return event
        kind, device, channel = parts
        if kind == "responder" and channel == "ack":
            ack: ResponderAck = decode_payload(ResponderAck, payload, where=topic)
            return ack
        if kind == "responder" and channel == "resolved":
            resolved: ResponderResolved = decode_payload(ResponderResolved, payload, where=topic)
            return resolved
        schema = SOUTH_SCHEMAS.get((kind, channel))
        if schema is None:
            raise ProtocolError("unknown_topic", where=topic)
        known = self.devices.get(device)
        if known is None or known[0] != kind:
            raise ProtocolError("unknown_device", where=topic, detail=f"{kind} {device!r} is not in the config")
        message = decode_payload(schema, payload, where=topic)
        now = self.clock.now()
        check_device_time(message, now, where=topic)
        _, group, zone = known
        if isinstance(message, LampState):
            data = {
                "on": message.on,
                "level": message.level,
                "power_w": message.power_w,
                "energy_wh": message.energy_wh,
                "burn_hours": message.burn_hours,
                "faults": message.faults,
                "policy_version": message.policy_version,
            }
            return Event(device, kind, "state", now, zone, group, data)
        if isinstance(message, CameraEvent):
            seen = {"detection": message.detection, "confidence": message.confidence}
            return Event(device, kind, message.detection, now, message.zone or zone, group, seen)
        if isinstance(message, DeviceStatus):
            name = "online" if message.online else "offline"
            return Event(device, kind, name, now, zone, group, {"online": message.online})
        if isinstance(message, WearableEvent):
            return Event(device, kind, message.event, now, zone, group, {"seq": message.seq})
        if isinstance(message, WearableVitals):
            vitals = (("heart_rate", message.heart_rate), ("battery", message.battery))
            return Event(device, kind, "vitals", now, zone, group, {k: v for k, v in vitals if v is not None})
        if isinstance(message, Heartbeat):
            battery = {} if message.battery is None else {"battery": message.battery}
            return Event(device, kind, "heartbeat", now, zone, group, battery)
        return None
