"""Lamp nodes on RS-485 Modbus buses and the wearable dongle, as the agent sees them.

Owns: turning bus readings and dongle messages into the same typed events MQTT devices
produce, and lamp commands and programs into bus writes. A lamp on a bus and an MQTT lamp are
one device model to the engine and the rules: only this module knows the difference.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from edge_agent.clock import Clock
from edge_agent.codec import registers
from edge_agent.config import GatewayConfig
from edge_agent.engine.lighting import LampState, local_time
from edge_agent.errors import EdgeError, ProtocolError
from edge_agent.models import Event
from edge_agent.policy.lighting import MINUTES_PER_NIGHT, NIGHT_END, night_minute, night_of, night_switch_minutes
from edge_agent.transports.dongle_link import DongleLink, DongleSettings
from edge_agent.transports.dongle_receiver import DongleMessage
from edge_agent.transports.modbus_bus import BusSettings, ModbusLampBus
from edge_agent.transports.modbus_values import LampProgram, LampReading, NodeStatus

log = logging.getLogger("edge_agent.serial")

DONGLE_RETRY_S = 0.5  # after a failed commit, before the dongle's next copy is taken

# Hardware faults worth an alert; clock-unset and master-silent are states the agent handles.
ALERT_FAULTS = registers.FAULT_LAMP | registers.FAULT_PROGRAM


def seconds_since_2000_local(now: float, tz: ZoneInfo) -> int:
    """The node clock's unit: local wall time in seconds since 2000-01-01 00:00."""
    moment = datetime.fromtimestamp(now, tz)
    return int((moment.replace(tzinfo=None) - datetime(2000, 1, 1)).total_seconds())


def fallback_steps(
    lamp: LampState, now: float, latitude: float, longitude: float, tz: ZoneInfo
) -> tuple[tuple[int, int], ...]:
    """Tonight's switch times and levels for a node's stored program (at most 8 steps).

    Step 0 is on (the program's base level), the last step off (0), the dimming steps in
    between. A firmware 2.0 node given its site (``site_registers``) moves on and off itself
    every night; these minutes are tonight's, and what a node without sun maths runs as is.
    The polar rule (``night_switch_minutes``): under polar night the night runs noon to noon
    (on and off both at 12:00, every dimming step inside); under polar day on = off = 12:00
    (dark, for a node with sun maths: a firmware 1.x clock program cannot say it).
    """
    when = local_time(now, tz)
    program = lamp.program
    night = night_of(when.epoch_day, when.minute)
    on, off = night_switch_minutes(
        night,
        latitude,
        longitude,
        when.utc_offset_minutes,
        program.on_kind,
        program.on_value,
        program.off_kind,
        program.off_value,
    )
    start = night_minute(on)
    end = MINUTES_PER_NIGHT if off >= NIGHT_END else night_minute(off)
    middle = sorted(
        ((m, lvl) for m, lvl in zip(program.step_minutes, program.step_levels, strict=True)),
        key=lambda s: night_minute(s[0]),
    )
    inside = [(m, lvl) for m, lvl in middle if start < night_minute(m) < end]
    steps = [(on, program.base_level), *inside[: registers.PROGRAM_MAX_STEPS - 2], (off, 0.0)]
    return tuple((round(m) % 1440, round(lvl)) for m, lvl in steps)


def node_site(lamp: LampState, now: float, latitude: float, longitude: float, tz: ZoneInfo) -> list[int]:
    """Holding registers 24-30 for a node: the gateway's location, the UTC offset of the clock
    it sets on the node (local time now), and the program's switch kinds and offsets."""
    program = lamp.program
    return registers.site_registers(
        latitude,
        longitude,
        local_time(now, tz).utc_offset_minutes,
        program.on_kind,
        program.on_value,
        program.off_kind,
        program.off_value,
    )


@dataclass(frozen=True)
class SitedProgram(LampProgram):
    """A program write that also carries the node's site (HR 24-30): one FC 16 from HR 6 to
    HR 30, so a firmware 2.0 node stores program, location and switch kinds in one save."""

    site: tuple[int, ...] = ()

    def to_registers(self) -> list[int]:
        regs = super().to_registers()
        pad = registers.HR_LATITUDE - registers.HR_PROGRAM_VERSION - len(regs)
        return regs + [0] * pad + list(self.site)


class SerialDevices:
    def __init__(
        self,
        config: GatewayConfig,
        clock: Clock,
        handle: Callable[[Event], Awaitable[None]],
        *,
        dongle_boot: Callable[[], str] = str,
        save_dongle_boot: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.handle = handle  # commits the event durably (and syncs) before it returns
        self.dongle_boot = dongle_boot  # the dongle's boot nonce as last committed ("" if none)
        self.save_dongle_boot = save_dongle_boot  # commits a new nonce durably before it returns
        self.buses: dict[str, ModbusLampBus] = {}
        self.dongle: DongleLink | None = None  # while the dongle's port is being served
        self.lamp_of: dict[tuple[str, int], str] = {}
        self.unit_of: dict[str, tuple[str, int]] = {}
        for lamp in config.file.lamps:
            if lamp.bus is not None and lamp.unit is not None:
                self.lamp_of[(lamp.bus, lamp.unit)] = lamp.id
                self.unit_of[lamp.id] = (lamp.bus, lamp.unit)
        self.wearable_of = {
            w.radio_id: w.id for w in config.file.wearables if w.link == "dongle" and w.radio_id is not None
        }
        self._tasks: set[asyncio.Task[None]] = set()
        self.desired: dict[str, float] = {}  # last level decided per bus lamp, re-sent on (re)connect
        self.device_info: dict[str, tuple[str | None, str | None]] = {
            lamp.id: (lamp.group, lamp.zone) for lamp in config.file.lamps
        }
        self.device_info |= {w.id: (None, w.zone) for w in config.file.wearables}

    def owns(self, lamp: str) -> bool:
        return lamp in self.unit_of

    @property
    def active(self) -> bool:
        return bool(self.unit_of) or (self.config.file.dongle is not None and bool(self.wearable_of))

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for name, bus in self.config.file.buses.items():
                units = tuple(sorted(u for (b, u) in self.lamp_of if b == name))
                if units:
                    group.create_task(self._run_bus(name, bus.port, units))
            if self.config.file.dongle is not None and self.wearable_of:
                group.create_task(self._run_dongle())

    async def _run_bus(self, name: str, port: str, units: tuple[int, ...]) -> None:
        cfg = self.config.file.buses[name]
        settings = BusSettings(
            port=port,
            baudrate=cfg.baudrate,
            units=units,
            inter_frame_delay=cfg.inter_frame_delay,
            timeout=cfg.timeout,
            retries=cfg.retries,
            offline_after=cfg.offline_after,
            poll_interval=cfg.poll_interval,
        )
        async with ModbusLampBus(settings) as bus:
            self.buses[name] = bus
            for unit in units:
                self._spawn(self._prepare(bus, unit, cfg.silence_timeout))
                self._resend(name, unit)
            async for item in bus.events():
                lamp = self.lamp_of.get((name, item.unit))
                if lamp is None:
                    continue
                group, zone = self.device_info[lamp]
                now = self.clock.now()
                if isinstance(item, NodeStatus):
                    if item.online:  # back (maybe rebooted): clock, timeout and level again
                        self._spawn(self._prepare(bus, item.unit, cfg.silence_timeout))
                        self._resend(name, item.unit)
                    await self.handle(
                        Event(
                            lamp,
                            "lamp",
                            "online" if item.online else "offline",
                            now,
                            zone,
                            group,
                            {"online": item.online},
                        )
                    )
                elif isinstance(item, LampReading):
                    await self.handle(Event(lamp, "lamp", "state", now, zone, group, reading_values(item)))

    async def _prepare(self, bus: ModbusLampBus, unit: int, silence_timeout: int) -> None:
        """Set the node's clock and its master-silence timeout (after which it runs its program)."""
        with contextlib.suppress(EdgeError):
            await bus.sync_clock(unit, seconds_since_2000_local(self.clock.now(), self.config.tz))
            await bus.set_silence_timeout(unit, silence_timeout)

    async def _run_dongle(self) -> None:
        dongle = self.config.file.dongle
        assert dongle is not None
        try:
            settings = DongleSettings(port=dongle.port, baudrate=dongle.baudrate, initial_boot=self.dongle_boot())
        except ValueError:  # a stored nonce we cannot read: treat it as unknown
            settings = DongleSettings(port=dongle.port, baudrate=dongle.baudrate)
        async with DongleLink(settings) as link:
            self.dongle = link
            async for message in link:
                try:
                    if message.kind == "hello":  # the dongle (re)booted: its seqs start over
                        if self.save_dongle_boot is not None:
                            await self.save_dongle_boot(message.boot)
                    else:
                        event = self._dongle_event(message)
                        if event is not None:
                            await self.handle(event)  # committed and on disk, or a known duplicate
                except Exception:
                    log.exception("dongle frame %s/%s not committed; the dongle resends it", message.boot, message.seq)
                    await asyncio.sleep(DONGLE_RETRY_S)  # its copies meanwhile are ignored, not ACKed
                    link.nack(message)
                else:
                    link.ack(message)  # only now may the dongle forget the frame

    def _dongle_event(self, message: DongleMessage) -> Event | None:
        wearable = self.wearable_of.get(message.device_id)
        if wearable is None:
            log.warning("dongle frame from unknown radio id %s", message.device_id)
            return None  # still ACKed: the dongle is stop-and-wait, it would block on this frame
        _, zone = self.device_info[wearable]
        name = {"vitals": "vitals", "heartbeat": "heartbeat"}.get(message.kind, message.kind)
        # (boot, link_seq) names this frame of this dongle across gateway restarts: the agent
        # records it with the alert and drops a frame it already committed (the dongle
        # retransmits until ACKed). Not "seq": that is the MQTT filter, keyed without the boot.
        data: dict[str, object] = {**message.data, "boot": message.boot, "link_seq": message.seq}
        return Event(wearable, "wearable", name, self.clock.now(), zone, None, data)

    # ----- commands -------------------------------------------------------------------------
    def set_level(self, lamp: str, level: float) -> None:
        self.desired[lamp] = level
        bus_name, unit = self.unit_of[lamp]
        self._resend(bus_name, unit)

    def _resend(self, bus_name: str, unit: int) -> None:
        bus = self.buses.get(bus_name)
        lamp = self.lamp_of[(bus_name, unit)]
        level = self.desired.get(lamp)
        if bus is not None and level is not None:
            self._spawn(self._quietly(bus.set_level_and_on(unit, round(level), level > 0)))

    async def write_program(self, lamp: str, version: int, state: LampState) -> bool:
        bus_name, unit = self.unit_of[lamp]
        bus = self.buses.get(bus_name)
        if bus is None:
            return False
        gw = self.config.file.gateway
        now = self.clock.now()
        steps = fallback_steps(state, now, gw.latitude, gw.longitude, self.config.tz)
        site = tuple(node_site(state, now, gw.latitude, gw.longitude, self.config.tz))
        try:
            try:
                await bus.write_program(unit, SitedProgram(version & 0xFFFF, steps, site))
            except ProtocolError as exc:
                if exc.reason != "exception_response":
                    raise
                # firmware 1.x has no HR 24-31 (illegal address): the program alone, by clock
                await bus.write_program(unit, LampProgram(version & 0xFFFF, steps))
        except EdgeError as exc:
            log.info("program v%s to %s not written: %s", version, lamp, exc)
            return False
        return True

    async def _quietly(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except EdgeError as exc:
            log.info("bus command failed: %s", exc)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def reading_values(reading: LampReading) -> dict[str, object]:
    return {
        "on": reading.on,
        "level": float(reading.level),
        "power_w": reading.power_w,
        "energy_wh": float(reading.energy_wh),
        "burn_hours": reading.burn_hours,
        "faults": reading.fault_bits & ALERT_FAULTS,
        "policy_version": reading.program_version or None,
        "voltage_v": reading.voltage_v,
        "current_a": reading.current_a,
        "fallback": reading.fallback,
    }
