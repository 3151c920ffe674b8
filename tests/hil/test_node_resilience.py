"""Lamp node firmware 2.0 under the MicroPython unix port: power cuts at every step of a
program write, cold boots without a gateway (the lamp follows the season from its own sun
maths), measured lamp faults, and the watchdog. The node runs under a supervisor that starts
it again after a power cut (kill -9) or a watchdog reset, on the same line and flash."""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import Callable
from datetime import datetime

import pytest
from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient

from edge_agent.codec import registers as regmap
from edge_agent.codec.crc import crc16_modbus
from edge_agent.errors import EdgeError
from edge_agent.policy.sun import ZENITH_OFFICIAL, sun_event_minute
from edge_agent.transports.modbus_bus import BusSettings, ModbusLampBus
from edge_agent.transports.modbus_values import LampProgram, LampReading

from .conftest import Node

pytestmark = [pytest.mark.hil, pytest.mark.timeout(120)]

LAT, LON, UTC_OFFSET = 26.87, 100.23, 480  # Naxi village, UTC+8
SAVE_STEPS = 7  # filesystem operations per save (hardware/firmware/common/store.py STEPS)


def bus_settings(node: Node) -> BusSettings:
    return BusSettings(port=node.port, units=(1,), timeout=0.5, retries=3, offline_after=5, poll_interval=0)


def s2000(y: int, mo: int, d: int, h: int, mi: int) -> int:
    return int((datetime(y, mo, d, h, mi) - datetime(2000, 1, 1)).total_seconds())


async def write_regs(node: Node, address: int, values: list[int]) -> None:
    client = AsyncModbusSerialClient(node.port, framer=FramerType.RTU, baudrate=9600, timeout=1, retries=3)
    assert await client.connect()
    try:
        rr = await client.write_registers(address, values, device_id=1)
        assert not rr.isError(), rr
    finally:
        client.close()


async def poll(node: Node) -> LampReading:
    async with ModbusLampBus(bus_settings(node)) as bus:
        return await bus.poll(1)


async def reboot(node: Node, how: str = "power") -> None:
    """Cut the power now (or arm a cut with how='cut N' and let the next save trip it)."""
    before = node.proc.boots()
    node.proc.command(how)
    await asyncio.to_thread(node.proc.wait_boots, before + 1)
    await asyncio.sleep(0.3)  # the firmware boots (imports, reads its flash)


def program(version: int) -> LampProgram:
    """Distinct steps per version, so a mixture of two programs would show."""
    return LampProgram(version, ((18 * 60, 100 - version), (23 * 60, 40 + version), (6 * 60 + version, 0)))


async def test_power_cut_at_every_step_of_a_program_write(node_factory: Callable[..., Node]) -> None:
    """The node saves a program write to flash before it answers: a power cut at any step of
    the save leaves it unanswered (the gateway's bus retries it once the node is back) or,
    answered, stored. Never a mixture, never the defaults, never "done" and then forgotten."""
    node = node_factory(rtc=True)
    async with ModbusLampBus(bus_settings(node)) as bus:
        await bus.sync_clock(1, s2000(2026, 1, 15, 20, 0))
        await bus.write_program(1, program(1))
    await asyncio.sleep(0.2)
    current = 1
    for step in range(1, SAVE_STEPS + 1):
        new = step + 1
        before = node.proc.boots()
        node.proc.command(f"cut {step}")
        acknowledged = True
        try:
            async with ModbusLampBus(bus_settings(node)) as bus:
                await bus.write_program(1, program(new))  # the save before the reply is cut
        except EdgeError:
            acknowledged = False  # the retries ran out before the node was back
        await asyncio.to_thread(node.proc.wait_boots, before + 1)
        await asyncio.sleep(0.3)
        r = await poll(node)
        if acknowledged:
            assert r.program_version == new, (step, r)  # answered, so stored
        else:
            assert r.program_version in (current, new), (step, r)
        expect = r.program_version
        await reboot(node)  # from flash alone, with no write after it: runs what it stored
        r = await poll(node)
        assert r.program_version == expect, (step, r)
        async with ModbusLampBus(bus_settings(node)) as bus:
            regs = await bus.read_holding(1, regmap.HR_PROGRAM_VERSION, 2 + 2 * 3)
        assert regs == program(expect).to_registers(), step
        assert r.fallback and r.fault_bits & regmap.FAULT_STORAGE == 0
        assert r.level == 100 - expect  # 20:00 on its RTC: the 18:00 step
        current = expect
    assert "power cut at save step 7" in node.proc.log()


def _frame(pdu: bytes) -> bytes:
    crc = crc16_modbus(pdu)
    return pdu + bytes([crc & 0xFF, crc >> 8])


async def test_a_cut_armed_while_the_node_reads_the_line_applies_to_the_next_write(
    node_factory: Callable[..., Node],
) -> None:
    """The harness's promise that the test above relies on: a ``cut N`` written before a
    request is sent trips that request's save, also when the request arrives while the node is
    still busy reading earlier bytes (here: the master polling unit 2 on the shared line,
    32 KiB of it) and does not wait for input in between."""
    node = node_factory(rtc=True)
    async with ModbusLampBus(bus_settings(node)) as bus:
        await bus.write_program(1, program(1))
    await asyncio.sleep(0.2)
    before = node.proc.boots()
    assert node.proc.proc.stdin is not None
    uart = node.proc.proc.stdin.fileno()  # the node's side of the line
    regs = program(2).to_registers()
    head = struct.pack(">BBHHB", 1, 16, regmap.HR_PROGRAM_VERSION, len(regs), 2 * len(regs))
    write = _frame(head + struct.pack(f">{len(regs)}H", *regs))
    armed: list[bool] = []

    def on_reply(direction: str, data: bytes) -> None:  # the node answered the first poll:
        if direction == "to_agent" and not armed:  # it is now reading the unit 2 polls
            armed.append(True)
            node.proc.command("cut 1")
            os.write(uart, write)

    node.line.tap = on_reply
    os.write(uart, _frame(bytes([1, 4, 0, 0, 0, 15])) + _frame(bytes([2, 4, 0, 0, 0, 15])) * 4096)
    await asyncio.to_thread(node.proc.wait_boots, before + 1, 5.0)
    assert armed and "power cut at save step 1" in node.proc.log()
    await asyncio.sleep(0.3)
    assert (await poll(node)).program_version == 1  # cut before the new copy was written


async def test_torn_copies_fall_back_to_previous_then_safe_default(node_factory: Callable[..., Node]) -> None:
    node = node_factory(rtc=True)
    async with ModbusLampBus(bus_settings(node)) as bus:
        await bus.sync_clock(1, s2000(2026, 1, 15, 21, 0))
        await bus.write_program(1, program(1))
        await asyncio.sleep(0.2)
        await bus.write_program(1, program(2))
    await asyncio.sleep(0.2)
    assert (node.state / "state.bin").exists() and (node.state / "state.bak").exists()
    data = bytearray((node.state / "state.bin").read_bytes())
    data[20] ^= 0xFF  # bit rot / a torn sector in the newest copy
    (node.state / "state.bin").write_bytes(bytes(data))
    await reboot(node)
    r = await poll(node)
    assert r.program_version == 1 and r.fallback  # the previous copy
    assert r.fault_bits & regmap.FAULT_STORAGE == 0
    (node.state / "state.bak").write_bytes(b"FW\x00")  # and the previous one torn too
    await reboot(node)
    r = await poll(node)
    # Safe default (hardware/README.md): no program, lit at 100 %, storage fault reported.
    assert r.program_version == 0 and not r.fallback
    assert r.level == 100 and r.on
    assert r.fault_bits & regmap.FAULT_STORAGE


def _sun(day: datetime, rising: bool) -> float:
    epoch_day = (day - datetime(1970, 1, 1)).days
    return sun_event_minute(epoch_day, LAT, LON, UTC_OFFSET, ZENITH_OFFICIAL, rising)


async def _configure_sun_program(node: Node) -> None:
    def s16(v: int) -> int:
        return v & 0xFFFF

    # location and switch kinds (HR 24-30): on at sunset, off at sunrise, no offsets
    values = [s16(round(LAT * 100)), s16(round(LON * 100)), s16(UTC_OFFSET), regmap.SWITCH_SUN, 0, regmap.SWITCH_SUN, 0]
    await write_regs(node, regmap.HR_LATITUDE, values)
    # the program as the gateway writes it today: on/off minutes of its rollout day (a June day)
    async with ModbusLampBus(bus_settings(node)) as bus:
        await bus.write_program(1, LampProgram(9, ((20 * 60 + 25, 100), (23 * 60, 50), (6 * 60 + 20, 0))))
        await bus.set_silence_timeout(1, 600)


@pytest.mark.parametrize(
    ("when", "minutes_from_event", "rising"),
    [
        (datetime(2026, 12, 21), +10, False),  # winter dusk: lit long before the June minute
        (datetime(2026, 12, 21), -10, False),
        (datetime(2026, 6, 21), -10, False),  # summer: still dark at 20:1x
        (datetime(2026, 6, 21), +10, False),
        (datetime(2026, 12, 22), -10, True),  # winter morning: still lit at 07:4x (50 % step)
        (datetime(2026, 12, 22), +10, True),
        (datetime(2026, 3, 20), +10, False),
    ],
)
async def test_cold_boot_without_gateway_follows_the_season(
    node_factory: Callable[..., Node], when: datetime, minutes_from_event: int, rising: bool
) -> None:
    node = node_factory(rtc=True)
    await _configure_sun_program(node)
    event = _sun(when, rising)
    minute = round(event) + minutes_from_event
    async with ModbusLampBus(bus_settings(node)) as bus:
        await bus.sync_clock(1, s2000(when.year, when.month, when.day, 0, 0) + minute * 60)
    await asyncio.sleep(0.2)
    await reboot(node)  # power cut; it comes back with its RTC and no gateway on the line
    r = await poll(node)
    assert r.fallback and r.program_version == 9
    assert not r.fault_bits & regmap.FAULT_CLOCK_UNSET
    lit = (minutes_from_event > 0) != rising
    if not lit:
        assert r.level == 0
    else:
        assert r.level == (50 if rising else 100)


async def test_cold_boot_without_rtc_is_lit_until_synced(node_factory: Callable[..., Node]) -> None:
    node = node_factory(rtc=False)
    await _configure_sun_program(node)
    async with ModbusLampBus(bus_settings(node)) as bus:
        await bus.sync_clock(1, s2000(2026, 6, 21, 12, 0))  # noon: the program says off
        assert (await bus.poll(1)).level == 100  # remote mode, the master's setpoint
    await asyncio.sleep(0.2)
    await reboot(node)
    r = await poll(node)
    assert r.fallback and r.program_version == 9
    assert r.fault_bits & regmap.FAULT_CLOCK_UNSET
    assert r.level == 100  # safe behaviour: lit until a master sets the clock
    async with ModbusLampBus(bus_settings(node)) as bus:
        await bus.sync_clock(1, s2000(2026, 6, 21, 12, 0))
        r = await bus.poll(1)
    assert not r.fault_bits & regmap.FAULT_CLOCK_UNSET


@pytest.mark.parametrize(
    ("fault", "bit"),
    [("open", regmap.FAULT_LAMP_OPEN), ("short", regmap.FAULT_LAMP_SHORT), ("driver", regmap.FAULT_DRIVER)],
)
async def test_measured_lamp_faults(node_factory: Callable[..., Node], fault: str, bit: int) -> None:
    node = node_factory(rtc=False)
    async with ModbusLampBus(bus_settings(node)) as bus:
        await bus.set_level_and_on(1, 60, True)
        await asyncio.sleep(0.8)
        healthy = await bus.poll(1)
        assert healthy.fault_bits & 0x70 == 0 and not healthy.fault_bits & regmap.FAULT_LAMP
        node.proc.command(f"fault {fault}")
        await asyncio.sleep(1.0)  # 500 ms confirmation on the node
        r = await bus.poll(1)
        assert r.fault_bits & (regmap.FAULT_LAMP | bit) == regmap.FAULT_LAMP | bit, hex(r.fault_bits)
        if fault == "open":
            assert r.power_w == pytest.approx(regmap.STANDBY_POWER_W, abs=0.11)  # measured, not assumed
        node.proc.command("fault ok")
        await asyncio.sleep(1.0)
        assert not (await bus.poll(1)).fault_bits & regmap.FAULT_LAMP


async def test_energy_counts_measured_power(node_factory: Callable[..., Node]) -> None:
    node = node_factory(rtc=False)
    async with ModbusLampBus(bus_settings(node)) as bus:
        await bus.set_level_and_on(1, 100, True)
        await bus.sync_clock(1, 0, rate=3600)  # one node-hour per real second
        node.proc.command("fault open")  # the lamp draws standby only
        await asyncio.sleep(2.0)
        r = await bus.poll(1)
        await bus.sync_clock(1, 0, rate=1)
    assert r.fault_bits & regmap.FAULT_LAMP_OPEN
    assert r.energy_wh < 2 * 101.5 / 10  # 1.5 W for ~2 h, far from 101.5 W for 2 h


async def test_watchdog_reboots_a_hung_loop_into_the_stored_program(node_factory: Callable[..., Node]) -> None:
    node = node_factory(rtc=True)
    async with ModbusLampBus(bus_settings(node)) as bus:
        await bus.sync_clock(1, s2000(2026, 1, 15, 23, 30))
        await bus.write_program(1, program(3))
        await bus.set_level_and_on(1, 5, True)
    await asyncio.sleep(0.2)
    node.proc.command("hang")
    await asyncio.to_thread(node.proc.wait_boots, 2, 15.0)
    await asyncio.sleep(0.3)
    assert "watchdog reset" in node.proc.log()
    r = await poll(node)
    assert r.fault_bits & regmap.FAULT_WDT_RESET
    assert r.fallback and r.level == 43  # the 23:00 step of program 3, from the RTC
    async with ModbusLampBus(bus_settings(node)) as bus:
        await bus.set_level(1, 20)  # a master write clears the reset flag
        assert not (await bus.poll(1)).fault_bits & regmap.FAULT_WDT_RESET
    assert node.proc.boots() == 2
