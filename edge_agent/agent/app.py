"""The gateway agent: the composition root. Config -> transports -> engine -> store.

Owns: wiring the links, the engine and the store together and the agent's loops: message
intake, timers and the lighting minute, outbox drains, trace flushing. Every inbound message
is decoded (or rejected and counted), handled by the engine and its effects written to the
outbox in one SQLite transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from edge_agent.agent import topics
from edge_agent.agent.links import link_settings, parse_url
from edge_agent.agent.policy_delivery import PolicyDelivery
from edge_agent.agent.rollout import RolloutTracker
from edge_agent.clock import Clock, ScaledClock
from edge_agent.config import GatewayConfig
from edge_agent.engine import (
    AlertChanged,
    Effect,
    Engine,
    LampSet,
    NotifyResponder,
    PublishRequest,
    Site,
)
from edge_agent.engine.engine import SiteLamp, SiteResponder
from edge_agent.errors import ProtocolError
from edge_agent.models import (
    SOUTH_SCHEMAS,
    AlertMessage,
    CameraEvent,
    DeviceStatus,
    Event,
    Heartbeat,
    LampCommand,
    LampProgram,
    LampState,
    PolicyAck,
    ResponderAck,
    WearableEvent,
    WearableVitals,
    decode_payload,
    encode,
)
from edge_agent.policy.model import Policy
from edge_agent.store.db import ALERT_PRIORITY, EVENT_PRIORITY, TELEMETRY_PRIORITY, Store, new_id
from edge_agent.transports.broker import EmbeddedBroker
from edge_agent.transports.mqtt import MqttLink

if TYPE_CHECKING:
    from edge_agent.agent.serial_devices import SerialDevices

log = logging.getLogger("edge_agent")


@dataclass
class AgentStats:
    received: int = 0
    duplicates: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    alarms: Counter[str] = field(default_factory=Counter)
    effects: int = 0
    published: Counter[str] = field(default_factory=Counter)


def site_from_config(config: GatewayConfig) -> Site:
    gw = config.file
    devices: dict[str, tuple[str, str | None, str | None]] = {}
    for lamp in gw.lamps:
        devices[lamp.id] = ("lamp", lamp.group, lamp.zone)
    for camera in gw.cameras:
        devices[camera.id] = ("camera", None, camera.zone)
    for wearable in gw.wearables:
        devices[wearable.id] = ("wearable", None, wearable.zone)
    return Site(
        gateway=config.id,
        latitude=gw.gateway.latitude,
        longitude=gw.gateway.longitude,
        tz=config.tz,
        lamps=tuple(SiteLamp(lamp.id, lamp.group, lamp.zone) for lamp in gw.lamps),
        responders=tuple(SiteResponder(r.id, r.role, r.x, r.y) for r in gw.responders),
        devices=devices,
        traces_per_rule=gw.limits.traces_per_rule,
    )


class Agent:
    """One gateway. ``await agent.run()`` until cancelled; ``agent.ready`` is set once serving."""

    DRAIN_WINDOW = 64  # outbox messages in flight at once per link

    def __init__(
        self,
        config: GatewayConfig,
        clock: Clock | None = None,
        *,
        south_url: str | None = None,
        north_url: str | None = None,
    ) -> None:
        self.config = config
        self.clock: Clock = clock or ScaledClock()
        self.root = topics.root(config.id)
        self.stats = AgentStats()
        self.ready = asyncio.Event()
        self._south_url = south_url or config.file.south.url
        self._north_url = north_url or config.file.north.url
        self.store = Store(
            config.data_dir / "gateway.sqlite3", quota_bytes=int(config.file.limits.outbox_max_mb * 2**20)
        )
        self.delivery = PolicyDelivery(config, config.data_dir / "gateway.sqlite3")
        policy, self.policy_version = self.delivery.startup_policy()
        self.site = site_from_config(config)
        self.serial: SerialDevices | None = None
        if config.file.buses or config.file.dongle is not None:
            # imported only when needed: pymodbus alone costs a gateway ~13 MB of memory
            from edge_agent.agent.serial_devices import SerialDevices

            self.serial = SerialDevices(config, self.clock, self.handle_event)
        self.engine = Engine(policy, self.site, self.store)
        self.broker: EmbeddedBroker | None = None
        self.south: MqttLink | None = None
        self.north: MqttLink | None = None
        self._wake = {"south": asyncio.Event(), "north": asyncio.Event()}
        self._timers_changed = asyncio.Event()
        self._last_faults: dict[str, int] = {}
        self._reported: dict[str, dict[str, Any]] = {}
        self._desired: dict[str, dict[str, Any]] = {}
        self._unflushed_rejects: Counter[str] = Counter()
        self._lamp_tasks: set[asyncio.Task[None]] = set()
        # rollout: the policy version each lamp last reported, and when we last pushed it
        self.rollout = RolloutTracker((lamp.id for lamp in config.file.lamps), self.policy_version)
        self._rollout_wake = asyncio.Event()
        self.max_payload = config.file.limits.max_payload_bytes
        self.on_effect: Callable[[Effect], None] | None = None  # observers (demo timeline)

    # ----- lifecycle ------------------------------------------------------------------------
    async def run(self) -> None:
        try:
            async with contextlib.AsyncExitStack() as stack:
                if self._south_url == "embedded":
                    self.broker = await stack.enter_async_context(EmbeddedBroker())
                    south_host, south_port = self.broker.host, self.broker.port
                else:
                    south_host, south_port = parse_url(self._south_url)
                subscriptions = [(f"{self.root}/{pattern}", 1) for pattern in topics.SOUTH_INBOUND]
                policy_topic = (f"{self.root}/{topics.POLICY}", 1)
                if self._north_url in ("none", ""):
                    subscriptions.append(policy_topic)  # no uplink: the centre reaches us locally
                self.south = MqttLink(
                    "south",
                    link_settings(self.config, "south", self.config.file.south, south_host, south_port),
                    subscriptions,
                    self._on_south,
                    on_connect=self._resync_lamps,
                )
                if self._north_url not in ("none", ""):
                    if self._north_url == "embedded":
                        north_host, north_port = south_host, south_port
                    else:
                        north_host, north_port = parse_url(self._north_url)
                    self.north = MqttLink(
                        "north",
                        link_settings(self.config, "north", self.config.file.north, north_host, north_port),
                        [policy_topic],
                        self._on_north,
                    )
                with self.store.transaction():
                    effects = self.engine.start(self.clock.now())
                    self._apply(effects)
                async with asyncio.TaskGroup() as group:
                    group.create_task(self.south.run())
                    group.create_task(self._drain("south", self.south))
                    if self.north is not None:
                        group.create_task(self.north.run())
                        group.create_task(self._drain("north", self.north))
                    group.create_task(self._time_loop())
                    group.create_task(self._flush_loop())
                    group.create_task(self._rollout_loop())
                    if self.serial is not None and self.serial.active:
                        group.create_task(self.serial.run())
                    await self.south.wait_connected(timeout=30)
                    self.ready.set()
        finally:
            self._flush()
            self.store.close()
            self.delivery.close()

    @property
    def south_address(self) -> tuple[str, int]:
        if self.broker is not None:
            return self.broker.host, self.broker.port
        return parse_url(self._south_url)

    # ----- intake ---------------------------------------------------------------------------
    async def _on_south(self, topic: str, payload: bytes) -> bool:
        """Handle one inbound message. False (not acknowledged to the broker, so it comes
        again after a reconnect) when what it caused could not be stored."""
        self.stats.received += 1
        try:
            await self._handle_south(topic, payload)
        except ProtocolError as exc:
            self._reject(exc.reason, str(exc))
        except sqlite3.Error as exc:
            self.alarm("storage", f"cannot store what {topic} caused: {exc}")
            return False
        except Exception:  # one bad message must never take the link down
            log.exception("internal error on %s", topic)
            self._reject("internal", topic)
        return True

    def alarm(self, reason: str, detail: str) -> None:
        """A local alarm: the gateway cannot keep a promise (e.g. an alert cannot be stored).

        Logged as critical, counted, and published on the local broker (``alarm``), which
        works without the store and without the uplink.
        """
        self.stats.alarms[reason] += 1
        log.critical("ALARM %s: %s", reason, detail)
        link = self.south
        if link is not None and link.connected:
            body = msgspec.json.encode({"v": 1, "ts": self.clock.now(), "reason": reason, "detail": detail})
            task = asyncio.get_running_loop().create_task(self._publish_quietly(link, f"{self.root}/alarm", body))
            self._lamp_tasks.add(task)
            task.add_done_callback(self._lamp_tasks.discard)

    def _reject(self, reason: str, text: str) -> None:
        self.stats.rejected[reason] += 1
        self._unflushed_rejects[reason] += 1
        log.warning("rejected %s", text)

    async def _handle_south(self, topic: str, payload: bytes) -> None:
        if topic == f"{self.root}/{topics.POLICY}":
            await self._on_policy(payload)
            return
        event = self._decode_south(topic, payload)
        if event is None:
            return
        if isinstance(event, ResponderAck):
            parts = topics.split(self.config.id, topic)
            responder = parts[1] if parts else "?"
            with self.store.transaction():
                self._apply(self.engine.acknowledge(event.alert_id, responder, self.clock.now()))
            return
        self.handle_event(event)

    def handle_event(self, event: Event) -> None:
        """One typed device event, from any transport (MQTT, Modbus bus, dongle): engine,
        effects and outbox in one transaction. Lamps on a bus and MQTT lamps meet here."""
        events = [event]
        if event.kind == "lamp" and event.name == "state":
            faults = int(event.data.get("faults", 0))
            if faults and faults != self._last_faults.get(event.device, 0):
                events.append(Event(event.device, "lamp", "fault", event.ts, event.zone, event.group, dict(event.data)))
            self._last_faults[event.device] = faults
            self._reported[event.device] = dict(event.data)
            reported_version = event.data.get("policy_version")
            self.rollout.report(event.device, reported_version if isinstance(reported_version, int) else None)
        durable = any(one.name in self.engine.durable_events for one in events)
        with self.store.transaction(durable=durable):
            seq = event.data.get("seq") if event.kind == "wearable" else None
            if isinstance(seq, int) and not self.store.first_time(event.device, seq, event.ts):
                self.stats.duplicates += 1  # a redelivery of a message already handled
                return
            for one in events:
                self._apply(self.engine.handle(one))
            if event.kind == "lamp" and event.name == "state" and self.north is not None:
                self._enqueue_north(
                    f"telemetry/lamp/{event.device}", dict(event.data), event.device, TELEMETRY_PRIORITY
                )
        self._timers_changed.set()

    def _decode_south(self, topic: str, payload: bytes) -> Event | ResponderAck | None:
        parts = topics.split(self.config.id, topic)
        if parts is None:
            raise ProtocolError("unknown_topic", where=topic)
        kind, device, channel = parts
        if len(payload) > self.max_payload:
            raise ProtocolError("oversized", where=topic, detail=f"{len(payload)} bytes")
        if kind == "responder" and channel == "ack":
            ack: ResponderAck = decode_payload(ResponderAck, payload, where=topic)
            return ack
        schema = SOUTH_SCHEMAS.get((kind, channel))
        if schema is None:
            raise ProtocolError("unknown_topic", where=topic)
        known = self.engine.site.devices.get(device)
        if known is None or known[0] != kind:
            raise ProtocolError("unknown_device", where=topic, detail=f"{kind} {device!r} is not in the config")
        message = decode_payload(schema, payload, where=topic)
        _, group, zone = known
        now = self.clock.now()
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
            return Event(
                device,
                kind,
                message.detection,
                now,
                message.zone or zone,
                group,
                {"detection": message.detection, "confidence": message.confidence},
            )
        if isinstance(message, DeviceStatus):
            return Event(
                device,
                kind,
                "online" if message.online else "offline",
                now,
                zone,
                group,
                {"online": message.online},
            )
        if isinstance(message, WearableEvent):
            return Event(device, kind, message.event, now, zone, group, {"seq": message.seq})
        if isinstance(message, WearableVitals):
            data = {
                k: v for k, v in (("heart_rate", message.heart_rate), ("battery", message.battery)) if v is not None
            }
            return Event(device, kind, "vitals", now, zone, group, data)
        if isinstance(message, Heartbeat):
            return Event(
                device,
                kind,
                "heartbeat",
                now,
                zone,
                group,
                {} if message.battery is None else {"battery": message.battery},
            )
        return None

    async def _on_north(self, topic: str, payload: bytes) -> None:
        self.stats.received += 1
        if topic == f"{self.root}/{topics.POLICY}":
            await self._on_policy(payload)

    # ----- policy ---------------------------------------------------------------------------
    async def _on_policy(self, envelope: bytes) -> None:
        """A signed bundle: accepted (durably) and installed, a no-op, or refused; then acked."""
        if not envelope:
            return  # a cleared retained message
        outcome = self.delivery.receive(envelope, self.clock.now())
        if outcome.policy is not None and outcome.version is not None:
            self.install_policy(outcome.policy, outcome.version)
        ack = PolicyAck(
            v=1,
            ts=self.clock.now(),
            gateway=self.config.id,
            status=outcome.status,  # type: ignore[arg-type]
            version=outcome.version if outcome.version is not None else self.policy_version,
            reason=outcome.reason,
            detail=outcome.detail,
        )
        link = "north" if self.north is not None else "south"
        with self.store.transaction():
            self.store.enqueue(
                link, f"{self.root}/{topics.POLICY_ACK}", encode(ack), priority=EVENT_PRIORITY, now=self.clock.now()
            )
        self._wake[link].set()

    def install_policy(self, policy: Policy, version: int) -> None:
        """Swap the engine for one running ``policy`` and push each lamp its program.

        Timers, alerts and the outbox live in the store and carry over; lamp levels are
        decided afresh, so every lamp gets a command, and the rollout loop sends each lamp its
        retained program until the lamp confirms the version.
        """
        for trace in self.engine.take_traces():
            self.engine.unsaved_traces.append(trace)
        self.store.add_traces(self.engine.take_traces(), self.config.file.limits.traces_per_rule)
        now = self.clock.now()
        with self.store.transaction():
            engine = Engine(policy, self.site, self.store)
            for lamp_id, state in self.engine.lighting.lamps.items():  # lamps keep what they show
                if lamp_id in engine.lighting.lamps:
                    engine.lighting.lamps[lamp_id].level = state.level
                    engine.lighting.lamps[lamp_id].boost_until = state.boost_until
            effects = engine.start(now)
            self.engine = engine
            self.policy_version = version
            self._apply(effects)
        self.rollout.install(version)  # every lamp gets its program now; the rollout loop sends it
        self._rollout_wake.set()
        self._timers_changed.set()

    def _program_message(self, lamp_id: str, now: float) -> bytes:
        gateway = self.config.file.gateway
        program = self.engine.lighting.lamps[lamp_id].program
        return encode(
            LampProgram(
                v=1,
                ts=now,
                policy_version=self.policy_version,
                program=program.name,
                on_kind=program.on_kind,
                on_value=program.on_value,
                off_kind=program.off_kind,
                off_value=program.off_value,
                level=program.base_level,
                steps=list(zip(program.step_minutes, program.step_levels, strict=True)),
                boost_level=program.boost_level,
                boost_minutes=program.boost_minutes,
                latitude=gateway.latitude,
                longitude=gateway.longitude,
            )
        )

    def rollout_status(self) -> dict[str, Any]:
        return self.rollout.summary(self.config.id)

    async def _rollout_loop(self) -> None:
        """Send its program to every lamp that has not confirmed the active version, and again
        (2 s after the broker took the last copy, three times, then 4, 8 and every 16 s) until
        it does.

        Lost messages and lamps that were offline or rebooted are caught here; a lamp that
        never confirms is reported as stuck by ``edge-agent rollout status``. Programs are
        retained, so a lamp that reconnects finds its program waiting.
        """
        last_summary: dict[str, Any] = {}
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._rollout_wake.wait(), self.rollout.first_retry_s / 4)
            self._rollout_wake.clear()
            link = self.south
            mqtt_up = link is not None and link.connected
            serial = self.serial
            reachable = [
                lamp for lamp in self.rollout.reported if mqtt_up or (serial is not None and serial.owns(lamp))
            ]
            for lamp_id in self.rollout.due(time.monotonic(), reachable):
                if serial is not None and serial.owns(lamp_id):
                    work = self._write_bus_program(lamp_id)
                else:
                    assert link is not None
                    work = self._send_program(link, lamp_id, self._program_message(lamp_id, self.clock.now()))
                task = asyncio.get_running_loop().create_task(work)
                self._lamp_tasks.add(task)
                task.add_done_callback(self._lamp_tasks.discard)
            summary = self.rollout_status()
            if summary != last_summary and link is not None and (mqtt_up or self.north is not None):
                last_summary = summary
                target = self.north if self.north is not None else link
                await self._publish_quietly(
                    target, f"{self.root}/{topics.ROLLOUT}", msgspec.json.encode(summary), retain=True
                )

    async def _write_bus_program(self, lamp_id: str) -> None:
        """A bus node's program write is answered by the node itself: that is its confirmation."""
        version = self.policy_version
        assert self.serial is not None
        if await self.serial.write_program(lamp_id, version, self.engine.lighting.lamps[lamp_id]):
            self.rollout.report(lamp_id, version)
        self.rollout.sent(lamp_id, time.monotonic())

    async def _send_program(self, link: MqttLink, lamp_id: str, payload: bytes) -> None:
        await self._publish_quietly(link, f"{self.root}/lamp/{lamp_id}/program", payload, retain=True)
        self.rollout.sent(lamp_id, time.monotonic())  # the retry clock starts at the PUBACK

    async def _publish_quietly(self, link: MqttLink, topic: str, payload: bytes, *, retain: bool = False) -> None:
        try:
            await link.publish(topic, payload, qos=1, retain=retain)
        except Exception as exc:  # retried by the loop that called us
            log.debug("publish to %s failed: %s", topic, exc)

    # ----- effects --------------------------------------------------------------------------
    def _apply(self, effects: list[Effect]) -> None:
        """Turn effects into outbox rows (inside the caller's transaction) and lamp commands."""
        now = self.clock.now()
        for effect in effects:
            self.stats.effects += 1
            if self.on_effect is not None:
                self.on_effect(effect)
            if isinstance(effect, LampSet):
                self._desired[effect.lamp] = {"level": effect.level, "reason": effect.reason}
                self._send_lamp(effect)
            elif isinstance(effect, NotifyResponder):
                payload = encode(self._alert_message(effect.alert))
                self.store.enqueue(
                    "south",
                    f"{self.root}/responder/{effect.responder}/alert",
                    payload,
                    priority=ALERT_PRIORITY,
                    now=now,
                )
                self._wake["south"].set()
            elif isinstance(effect, AlertChanged):
                if self.north is not None:
                    body = msgspec.to_builtins(self._alert_message(effect.alert))
                    self._enqueue_north("alert", body, effect.alert["device"], ALERT_PRIORITY)
            elif isinstance(effect, PublishRequest):
                device = str(effect.payload.get("device", "gateway"))
                self._enqueue_north(f"event/{effect.topic}", dict(effect.payload), device, EVENT_PRIORITY)

    def _enqueue_north(self, suffix: str, body: dict[str, Any], device: str, priority: int) -> None:
        """Queue a message for the platform with our own id and a per-device sequence number.

        ``msg_id`` identifies the message across retries (receivers drop duplicates by it);
        ``seq`` counts per device, so a receiver can tell a gap from a reordering. Without an
        uplink, events go to the local broker; alerts stay in the local alert table.
        """
        link = "north" if self.north is not None else "south"
        msg_id = new_id()
        body.update(v=1, msg_id=msg_id, seq=self.store.next_seq(f"{link}.{device}"), gateway=self.config.id)
        self.store.enqueue(
            link,
            f"{self.root}/{suffix}",
            msgspec.json.encode(body),
            priority=priority,
            now=self.clock.now(),
            msg_id=msg_id,
        )
        self._wake[link].set()

    def _alert_message(self, alert: dict[str, Any]) -> AlertMessage:
        kind = self.engine.site.devices.get(alert["device"], ("gateway", None, None))[0]
        return AlertMessage(
            v=1,
            ts=alert["updated"],
            alert_id=alert["alert_id"],
            gateway=self.config.id,
            device=alert["device"],
            kind=kind,
            priority=alert["priority"],
            message=alert["message"],
            rule=alert["rule"],
            status=alert["status"],
            responder=alert["responder"],
            step=alert["step"],
        )

    def _send_lamp(self, change: LampSet) -> None:
        if self.serial is not None and self.serial.owns(change.lamp):
            self.serial.set_level(change.lamp, change.level)
            return
        link = self.south
        if link is None or not link.connected:
            return  # desired state is kept; the lamp is brought in line when the link returns
        command = LampCommand(v=1, ts=self.clock.now(), level=change.level, cmd_id=new_id(), reason=change.reason)
        task = asyncio.get_running_loop().create_task(self._publish_lamp(link, change.lamp, encode(command)))
        self._lamp_tasks.add(task)
        task.add_done_callback(self._lamp_tasks.discard)

    def _resync_lamps(self) -> None:
        """After every (re)connect, bring each lamp in line with its decided level."""
        for lamp in self.engine.lighting.lamps.values():
            if lamp.level is not None:
                self._send_lamp(LampSet(lamp.lamp, lamp.level, "resync"))

    async def _publish_lamp(self, link: MqttLink, lamp: str, payload: bytes) -> None:
        try:
            await link.publish(f"{self.root}/lamp/{lamp}/set", payload, qos=1)
            self.stats.published["lamp_set"] += 1
        except Exception as exc:
            log.warning("lamp %s command not sent: %s", lamp, exc)

    # ----- loops ----------------------------------------------------------------------------
    async def _drain(self, name: str, link: MqttLink) -> None:
        """Send the outbox in order (alerts first); a message leaves it only after PUBACK.

        Up to a window of publishes is in flight at once, issued in outbox order on one
        connection (so the broker sees them in order). Only the unbroken prefix of
        acknowledged messages is deleted: after a failure everything from the first
        unacknowledged message on is sent again (receivers drop duplicates by message id).
        """
        wake = self._wake[name]
        while True:
            await link.wait_connected()
            batch = self.store.pending(name, limit=self.DRAIN_WINDOW)
            if not batch:
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout=1.0)
                continue
            results = await asyncio.gather(
                *(link.publish(m.topic, m.payload, qos=m.qos, retain=m.retain) for m in batch),
                return_exceptions=True,
            )
            done: list[int] = []
            for message, result in zip(batch, results, strict=True):
                if isinstance(result, BaseException):
                    log.info("%s outbox paused: %s", name, result)
                    break
                done.append(message.seq)
            self.store.delivered(done)
            self.stats.published[name] += len(done)
            if len(done) < len(batch):
                await asyncio.sleep(0.05)

    async def _time_loop(self) -> None:
        """Fire due timers and re-decide lamp levels at each minute of the timeline."""
        next_minute = (self.clock.now() // 60.0 + 1.0) * 60.0
        while True:
            due = self.engine.next_due()
            wake_at = next_minute if due is None else min(due, next_minute)
            self._timers_changed.clear()
            sleeper = asyncio.ensure_future(self.clock.sleep_until(wake_at))
            changed = asyncio.ensure_future(self._timers_changed.wait())
            await asyncio.wait({sleeper, changed}, return_when=asyncio.FIRST_COMPLETED)
            for task in (sleeper, changed):
                task.cancel()
            now = self.clock.now()
            with self.store.transaction():
                effects = self.engine.fire_due(now)
                if now >= next_minute:
                    effects.extend(self.engine.tick_lighting(now))
                    next_minute = (now // 60.0 + 1.0) * 60.0
                self._apply(effects)

    INBOX_KEEP_S = 7 * 86400.0  # how long a wearable's (device, seq) is remembered for redelivery

    async def _flush_loop(self) -> None:
        flushes = 0
        while True:
            await asyncio.sleep(1.0)
            self._flush()
            flushes += 1
            if flushes % 600 == 0:  # every ten minutes: forget redelivery ids older than a week
                with self.store.transaction(durable=False):
                    self.store.prune_inbox(self.clock.now() - self.INBOX_KEEP_S)

    def _flush(self) -> None:
        try:
            self.store.add_traces(self.engine.take_traces(), self.config.file.limits.traces_per_rule)
            now = self.clock.now()
            if self._reported or self._desired:
                with self.store.transaction(durable=False):
                    for device, reported in self._reported.items():
                        self.store.set_reported(device, reported, now)
                    for device, desired in self._desired.items():
                        self.store.set_desired(device, desired, now)
                self._reported.clear()
                self._desired.clear()
            if self._unflushed_rejects:
                self.store.add_counts({f"rejected.{k}": v for k, v in self._unflushed_rejects.items()})
                self._unflushed_rejects.clear()
        except Exception:
            log.exception("flush failed")


async def run_agent(config: GatewayConfig, clock: Clock | None = None) -> None:
    agent = Agent(config, clock)
    started = time.monotonic()
    log.info("gateway %s starting", config.id)
    try:
        await agent.run()
    finally:
        log.info("gateway %s stopped after %.1fs", config.id, time.monotonic() - started)
