"""Simulated lamps, cameras, wearables and responder phones, speaking real MQTT.

Owns: device-side behaviour for the demo, tests and the fleet run: lamps obey ``set``
commands and report state; cameras and wearables publish events on request; responder phones
receive alerts and acknowledge after a delay on the gateway's timeline (or never).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
import msgspec

from edge_agent.clock import Clock
from edge_agent.transports.mqtt_client import NO_DELAY, QUIET_LOG

STANDBY_W = 1.5  # smart node standby, docs/DOMAIN.md#lighting: 1-3 W


@dataclass
class SimLamp:
    id: str
    rated_w: float = 100.0
    level: float = 0.0
    faults: int = 0
    energy_wh: float = 0.0
    commands: int = 0
    policy_version: int | None = None


@dataclass
class ResponderBehaviour:
    ack_after: float | None  # timeline seconds until the phone acknowledges; None: never


@dataclass
class Received:
    topic: str
    payload: dict[str, Any]
    real_time: float


@dataclass
class SimField:
    """All simulated devices of one gateway, on one MQTT connection."""

    gateway: str
    host: str
    port: int
    clock: Clock
    lamps: dict[str, SimLamp] = field(default_factory=dict)
    responders: dict[str, ResponderBehaviour] = field(default_factory=dict)
    on_receive: Callable[[Received], None] | None = None
    received: list[Received] = field(default_factory=list)
    keep_received: bool = True
    loss: float = 0.0  # chance that a lamp misses a command or its report is lost (fleet runs)
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    dropped: int = 0
    _client: aiomqtt.Client | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def root(self) -> str:
        return f"district/v1/{self.gateway}"

    async def run(self, ready: asyncio.Event | None = None) -> None:
        async with aiomqtt.Client(
            self.host, self.port, identifier=f"{self.gateway}-simfield", socket_options=NO_DELAY, logger=QUIET_LOG
        ) as client:
            self._client = client
            await client.subscribe(f"{self.root}/lamp/+/set", qos=1)
            await client.subscribe(f"{self.root}/lamp/+/program", qos=1)
            await client.subscribe(f"{self.root}/responder/+/alert", qos=1)
            if ready is not None:
                ready.set()
            async for message in client.messages:
                topic = str(message.topic)
                raw = message.payload if isinstance(message.payload, bytes) else b"{}"
                payload = msgspec.json.decode(raw)
                item = Received(topic, payload, time.monotonic())
                if self.keep_received:
                    self.received.append(item)
                if self.on_receive is not None:
                    self.on_receive(item)
                parts = topic.split("/")
                if parts[-3] == "lamp" and parts[-2] in self.lamps:
                    if self.loss and self.rng.random() < self.loss:
                        self.dropped += 1
                        continue
                    lamp = self.lamps[parts[-2]]
                    if parts[-1] == "program":
                        lamp.policy_version = int(payload["policy_version"])
                    else:
                        lamp.level = float(payload["level"])
                        lamp.commands += 1
                    self._spawn(self.publish_lamp_state(lamp.id))  # report without stalling intake
                elif parts[-3] == "responder":
                    behaviour = self.responders.get(parts[-2])
                    if behaviour is not None and behaviour.ack_after is not None:
                        self._spawn(self._ack_later(parts[-2], payload["alert_id"], behaviour.ack_after))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _ack_later(self, responder: str, alert_id: str, delay: float) -> None:
        await self.clock.sleep_until(self.clock.now() + delay)
        await self.publish(f"responder/{responder}/ack", {"alert_id": alert_id})

    async def publish(self, suffix: str, payload: dict[str, Any]) -> None:
        assert self._client is not None, "SimField.run() is not running"
        body = {"v": 1, **payload}
        await self._client.publish(f"{self.root}/{suffix}", msgspec.json.encode(body), qos=1)

    async def publish_lamp_state(self, lamp_id: str) -> None:
        lamp = self.lamps[lamp_id]
        if self.loss and self.rng.random() < self.loss:
            self.dropped += 1
            return
        power = STANDBY_W + (lamp.rated_w * lamp.level / 100.0 if lamp.level > 0 else 0.0)
        await self.publish(
            f"lamp/{lamp_id}/state",
            {
                "on": lamp.level > 0,
                "level": lamp.level,
                "power_w": power,
                "energy_wh": lamp.energy_wh,
                "faults": lamp.faults,
                "policy_version": lamp.policy_version,
            },
        )

    async def camera(self, camera: str, detection: str, zone: str | None = None) -> None:
        payload: dict[str, Any] = {"detection": detection}
        if zone is not None:
            payload["zone"] = zone
        await self.publish(f"camera/{camera}/event", payload)

    async def wearable(self, wearable: str, event: str, **extra: Any) -> None:
        if event in ("sos", "fall", "geofence_exit"):
            await self.publish(f"wearable/{wearable}/event", {"event": event, **extra})
        else:
            await self.publish(f"wearable/{wearable}/{event}", extra)

    async def fault(self, lamp_id: str, bits: int) -> None:
        self.lamps[lamp_id].faults = bits
        await self.publish_lamp_state(lamp_id)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
