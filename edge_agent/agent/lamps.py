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
from edge_agent.agent.context import GatewayContext
from edge_agent.agent.rollout import RolloutTracker
from edge_agent.agent.runtime import publish_quietly
from edge_agent.engine import LampSet
from edge_agent.models import LampCommand, LampProgram, encode
from edge_agent.policy.retry import TICK_S
from edge_agent.store.outbox import new_id
from edge_agent.transports.link import Link

if TYPE_CHECKING:
    from edge_agent.agent.serial_devices import SerialDevices

log = logging.getLogger("edge_agent")

MIN_WAIT_S = 0.02  # the rollout loop's shortest sleep


class Lamps:
    def __init__(self, context: GatewayContext, serial: SerialDevices | None, rollout: RolloutTracker) -> None:
        config = context.config
        self.gateway = config.id
        self.latitude = config.file.gateway.latitude
        self.longitude = config.file.gateway.longitude
        self.clock = context.clock
        self.active = context.active
        self.links = context.links
        self.serial = serial
        self.rollout = rollout
        self.stats = context.stats
        self.background = context.background
        self.rollout_wake = asyncio.Event()
        # the latest install's stage stamps (wall clock) and the lamps whose first copy of the
        # program the broker (or bus node) has not taken yet; logged once as ``rollout-timing``
        self._stamps: dict[str, float] = {}
        self._first_round: set[str] = set()
        self._confirmed_logged = 0
        if rollout.version > 0:  # a restart with an accepted policy: its first round starts now
            self._stamps = {"started": time.time()}
            self._first_round = set(rollout.reported)

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

    async def _publish_level(self, link: Link, lamp: str, payload: bytes) -> None:
        try:
            await link.publish(topics.lamp_set(self.gateway, lamp), payload, qos=1)
            self.stats.published["lamp_set"] += 1
        except Exception as exc:
            log.warning("lamp %s command not sent: %s", lamp, exc)

    # ----- programs and rollout -------------------------------------------------------------
    def installed(self, version: int, stamps: dict[str, float] | None = None) -> None:
        """A new policy runs: every lamp gets its program now; the rollout loop sends it."""
        self.rollout.install(version)
        self._stamps = dict(stamps or {})
        self._first_round = {lamp for lamp, v in self.rollout.reported.items() if v != version}
        self.rollout_wake.set()

    def _program_taken(self, lamp_id: str, version: int) -> None:
        """One lamp's copy was taken; after the install's first round, log where the time went."""
        if lamp_id not in self._first_round or version != self.rollout.version:
            return
        now = time.time()
        self._stamps.setdefault("first_program", now)
        self._first_round.discard(lamp_id)
        if not self._first_round:
            self._stamps["programs_sent"] = now
            self._log_timing(version)

    def _log_timing(self, version: int, **more: Any) -> None:
        line = {
            "gateway": self.gateway,
            "version": version,
            "lamps": len(self.rollout.reported),
            **self._stamps,
            **more,
        }
        log.info("rollout-timing %s", msgspec.json.encode(line).decode())

    def _log_confirmed(self) -> None:
        """Once per version: every lamp confirmed (the gateway's view), with the lamps'
        turnaround (first copy taken -> confirmation) and the retries it cost."""
        rollout = self.rollout
        if rollout.version <= 0 or self._confirmed_logged == rollout.version:
            return
        if any(v != rollout.version for v in rollout.reported.values()):
            return
        self._confirmed_logged = rollout.version
        turnaround = sorted(rollout.turnaround)
        pick = (
            (lambda q: round(turnaround[min(len(turnaround) - 1, int(q * len(turnaround)))], 4))
            if turnaround
            else (lambda q: None)
        )
        self._log_timing(
            rollout.version,
            confirmed_gw=time.time(),
            turnaround_p50=pick(0.5),
            turnaround_p90=pick(0.9),
            retries=rollout.retries,
            deferred=rollout.deferred,
        )

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
        rollout = self.rollout
        while True:
            # sleep until the next copy may be due (at most a tick), or until woken; a copy due
            # already was not sent (its lamp out of reach): look again in a tick
            now = rollout.clock()
            upcoming = rollout.next_due(now)
            wait = TICK_S if upcoming <= now else min(TICK_S, max(MIN_WAIT_S, upcoming - now))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):  # (3.11's wait_for can swallow a cancellation)
                    await self.rollout_wake.wait()
            self.rollout_wake.clear()
            link = self.links.south
            north = self.links.north
            mqtt_up = link is not None and link.connected
            serial = self.serial
            reachable = [lamp for lamp in rollout.reported if mqtt_up or (serial is not None and serial.owns(lamp))]
            for lamp_id in rollout.due(rollout.clock(), reachable):
                if serial is not None and serial.owns(lamp_id):
                    self.background.spawn(self._write_bus_program(serial, lamp_id))
                else:
                    assert link is not None
                    payload = self.program_message(lamp_id, self.clock.now())
                    self.background.spawn(self._send_program(link, lamp_id, payload, self.active.version))
            summary = self.rollout_status()
            if summary != last_summary and link is not None and (mqtt_up or north is not None):
                last_summary = summary
                target = north if north is not None else link
                await publish_quietly(target, topics.rollout(self.gateway), msgspec.json.encode(summary), retain=True)
            self._log_confirmed()

    async def _write_bus_program(self, serial: SerialDevices, lamp_id: str) -> None:
        """A bus node's program write is answered by the node itself: that is its confirmation."""
        version = self.active.version
        if await serial.write_program(lamp_id, version, self.active.engine.lighting.lamps[lamp_id]):
            self.rollout.report(lamp_id, version)
        self.rollout.sent(lamp_id, self.rollout.clock())
        self._program_taken(lamp_id, version)

    async def _send_program(self, link: Link, lamp_id: str, payload: bytes, version: int) -> None:
        await publish_quietly(link, topics.lamp_program(self.gateway, lamp_id), payload, retain=True)
        self.rollout.sent(lamp_id, self.rollout.clock())  # the retry clock starts at the PUBACK
        self._program_taken(lamp_id, version)
