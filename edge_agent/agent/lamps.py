"""Lamps as the agent drives them: level commands, resync, programs and the policy rollout.

Owns: sending each decided level to its lamp (MQTT ``lamp/<id>/set``, or the lamp's bus),
bringing every lamp in line after a reconnect, the lamps' own copies of their programs
(retained ``lamp/<id>/program``, or a bus program write) and the rollout loop that sends them
until each lamp confirms the active policy version, with the retained ``rollout`` summary.
The bookkeeping (who confirmed, who is due) is ``RolloutTracker``; this module does the I/O.
Must not import: the app or the other flows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

import msgspec

from edge_agent.agent import topics
from edge_agent.agent.rollout import RolloutTracker
from edge_agent.agent.runtime import ActivePolicy, AgentStats, Background, Links, publish_quietly
from edge_agent.clock import Clock
from edge_agent.config import GatewayConfig
from edge_agent.engine import LampSet
from edge_agent.models import LampCommand, LampProgram, encode
from edge_agent.store.db import new_id
from edge_agent.transports.mqtt import MqttLink

if TYPE_CHECKING:
    from edge_agent.agent.serial_devices import SerialDevices

log = logging.getLogger("edge_agent")


class Lamps:
    def __init__(
        self,
        config: GatewayConfig,
        clock: Clock,
        active: ActivePolicy,
        links: Links,
        serial: SerialDevices | None,
        rollout: RolloutTracker,
        stats: AgentStats,
        background: Background,
    ) -> None:
        self.gateway = config.id
        self.latitude = config.file.gateway.latitude
        self.longitude = config.file.gateway.longitude
        self.clock = clock
        self.active = active
        self.links = links
        self.serial = serial
        self.rollout = rollout
        self.stats = stats
        self.background = background
        self.rollout_wake = asyncio.Event()

    # ----- levels ---------------------------------------------------------------------------
    def send(self, change: LampSet) -> None:
        """Send a decided level now; a lamp out of reach is brought in line on reconnect."""
        if self.serial is not None and self.serial.owns(change.lamp):
            self.serial.set_level(change.lamp, change.level)
            return
        link = self.links.south
        if link is None or not link.connected:
            return  # desired state is kept; the lamp is brought in line when the link returns
        command = LampCommand(v=1, ts=self.clock.now(), level=change.level, cmd_id=new_id(), reason=change.reason)
        self.background.spawn(self._publish_level(link, change.lamp, encode(command)))

    def resync(self) -> None:
        """After every (re)connect, bring each lamp in line with its decided level."""
        for lamp in self.active.engine.lighting.lamps.values():
            if lamp.level is not None:
                self.send(LampSet(lamp.lamp, lamp.level, "resync"))

    async def _publish_level(self, link: MqttLink, lamp: str, payload: bytes) -> None:
        try:
            await link.publish(topics.lamp_set(self.gateway, lamp), payload, qos=1)
            self.stats.published["lamp_set"] += 1
        except Exception as exc:
            log.warning("lamp %s command not sent: %s", lamp, exc)

    # ----- programs and rollout -------------------------------------------------------------
    def installed(self, version: int) -> None:
        """A new policy runs: every lamp gets its program now; the rollout loop sends it."""
        self.rollout.install(version)
        self.rollout_wake.set()

    def rollout_status(self) -> dict[str, Any]:
        return self.rollout.summary(self.gateway)

    def program_message(self, lamp_id: str, now: float) -> bytes:
        program = self.active.engine.lighting.lamps[lamp_id].program
        return encode(
            LampProgram(
                v=1,
                ts=now,
                policy_version=self.active.version,
                program=program.name,
                on_kind=program.on_kind,
                on_value=program.on_value,
                off_kind=program.off_kind,
                off_value=program.off_value,
                level=program.base_level,
                steps=list(zip(program.step_minutes, program.step_levels, strict=True)),
                boost_level=program.boost_level,
                boost_minutes=program.boost_minutes,
                latitude=self.latitude,
                longitude=self.longitude,
            )
        )

    async def run_rollout(self) -> None:
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
                await asyncio.wait_for(self.rollout_wake.wait(), self.rollout.first_retry_s / 4)
            self.rollout_wake.clear()
            link = self.links.south
            north = self.links.north
            mqtt_up = link is not None and link.connected
            serial = self.serial
            reachable = [
                lamp for lamp in self.rollout.reported if mqtt_up or (serial is not None and serial.owns(lamp))
            ]
            for lamp_id in self.rollout.due(time.monotonic(), reachable):
                if serial is not None and serial.owns(lamp_id):
                    self.background.spawn(self._write_bus_program(serial, lamp_id))
                else:
                    assert link is not None
                    payload = self.program_message(lamp_id, self.clock.now())
                    self.background.spawn(self._send_program(link, lamp_id, payload))
            summary = self.rollout_status()
            if summary != last_summary and link is not None and (mqtt_up or north is not None):
                last_summary = summary
                target = north if north is not None else link
                await publish_quietly(target, topics.rollout(self.gateway), msgspec.json.encode(summary), retain=True)

    async def _write_bus_program(self, serial: SerialDevices, lamp_id: str) -> None:
        """A bus node's program write is answered by the node itself: that is its confirmation."""
        version = self.active.version
        if await serial.write_program(lamp_id, version, self.active.engine.lighting.lamps[lamp_id]):
            self.rollout.report(lamp_id, version)
        self.rollout.sent(lamp_id, time.monotonic())

    async def _send_program(self, link: MqttLink, lamp_id: str, payload: bytes) -> None:
        await publish_quietly(link, topics.lamp_program(self.gateway, lamp_id), payload, retain=True)
        self.rollout.sent(lamp_id, time.monotonic())  # the retry clock starts at the PUBACK
