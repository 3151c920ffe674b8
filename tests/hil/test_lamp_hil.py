"""Lamp node firmware against the agent's Modbus master and an independent one (pymodbus)."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from typing import Any

import pytest
from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient

from edge_agent.codec import registers as regmap
from edge_agent.errors import ProtocolError, TransportError
from edge_agent.transports.modbus_bus import BusSettings, ModbusLampBus
from edge_agent.transports.modbus_values import LampProgram, LampReading, NodeStatus

from .conftest import LampTarget

pytestmark = [pytest.mark.hil, pytest.mark.timeout(60)]


def settings(t: LampTarget, **kw: Any) -> BusSettings:
    base = BusSettings(
        port=t.port,
        baudrate=t.baudrate,
        units=t.units,
        timeout=0.5,
        retries=2,
        offline_after=2,
        poll_interval=0,
    )
    return dataclasses.replace(base, **kw)


async def test_dim_and_read_back_power(lamp_target: LampTarget) -> None:
    unit = lamp_target.units[0]
    async with ModbusLampBus(settings(lamp_target)) as bus:
        await bus.set_level_and_on(unit, 50, True)
        reading = await bus.poll(unit)
        assert reading.level == 50
        assert reading.on
        assert reading.power_w == pytest.approx(regmap.expected_power_w(50, True), abs=0.11)
        assert reading.voltage_v == pytest.approx(regmap.NOMINAL_VOLTAGE_V, abs=1.0)
        assert reading.firmware_version == regmap.FIRMWARE_VERSION
        await bus.set_on(unit, False)
        off = await bus.poll(unit)
        assert not off.on
        assert off.power_w == pytest.approx(regmap.STANDBY_POWER_W, abs=0.11)
        await bus.set_level(unit, 100)
        await bus.set_on(unit, True)
        full = await bus.poll(unit)
        assert full.power_w == pytest.approx(regmap.expected_power_w(100, True), abs=0.11)


async def test_independent_master_agrees(lamp_target: LampTarget) -> None:
    unit = lamp_target.units[0]
    async with ModbusLampBus(settings(lamp_target)) as bus:
        await bus.set_level_and_on(unit, 30, True)
    client = AsyncModbusSerialClient(
        lamp_target.port, framer=FramerType.RTU, baudrate=lamp_target.baudrate, timeout=1, retries=2
    )
    assert await client.connect()
    try:
        hr = await client.read_holding_registers(regmap.HR_LEVEL, count=2, device_id=unit)
        assert not hr.isError()
        assert hr.registers == [30, 1]
        ir = await client.read_input_registers(0, count=regmap.IR_COUNT, device_id=unit)
        assert ir.registers[regmap.IR_POWER] == 15 + 300
        assert ir.registers[regmap.IR_ACTUAL_LEVEL] == 30
        wr = await client.write_register(regmap.HR_LEVEL, 80, device_id=unit)
        assert not wr.isError()
        bad = await client.write_register(regmap.HR_LEVEL, 150, device_id=unit)
        assert bad.isError()
        assert bad.exception_code == regmap.EXC_ILLEGAL_VALUE
        oob = await client.read_input_registers(regmap.IR_COUNT, count=1, device_id=unit)
        assert oob.isError()
        assert oob.exception_code == regmap.EXC_ILLEGAL_ADDRESS
    finally:
        client.close()
    async with ModbusLampBus(settings(lamp_target)) as bus:
        assert (await bus.poll(unit)).level == 80
        assert await bus.read_holding(unit, regmap.HR_LEVEL, 1) == [80]
        with pytest.raises(ProtocolError) as err:
            await bus.read_holding(unit, regmap.HR_COUNT, 1)
        assert err.value.reason == "exception_response"


async def _poll_until(bus: ModbusLampBus, unit: int, pred: object, seconds: float) -> LampReading:
    async with asyncio.timeout(seconds):
        while True:
            r = await bus.poll(unit)
            if pred(r):  # type: ignore[operator]
                return r
            await asyncio.sleep(0.05)


async def test_node_falls_back_to_its_program_when_master_is_silent(
    lamp_target: LampTarget,
) -> None:
    unit = lamp_target.units[0]
    # Node clock x600 (10 node-minutes per real second); 60 node-seconds of silence = 0.1 s.
    program = LampProgram(version=7, steps=((18 * 60, 100), (22 * 60, 80), (23 * 60 + 59, 50)))
    async with ModbusLampBus(settings(lamp_target)) as bus:
        await bus.write_program(unit, program)
        await bus.set_level_and_on(unit, 10, True)
        await bus.sync_clock(unit, 23 * 3600 + 50 * 60, rate=600)  # 23:50 on day 0
        await bus.set_silence_timeout(unit, 60)
        first = await bus.poll(unit)
        assert not first.fallback
        assert first.level == 10
        assert first.program_version == 7
    await asyncio.sleep(0.5)  # nobody talks to the node: 300 node-seconds of silence
    async with ModbusLampBus(settings(lamp_target)) as bus:
        r = await bus.poll(unit)  # a read shows fallback; it does not end it
        assert r.fallback
        assert r.fault_bits & regmap.FAULT_MASTER_SILENT
        assert r.level == 80  # the 22:00 step
        # the node's own clock passes 23:59 and its program dims to 50 %
        r = await _poll_until(bus, unit, lambda x: x.level == 50, seconds=20)
        assert r.fallback
        assert r.power_w == pytest.approx(regmap.expected_power_w(50, True), abs=0.11)
        # the master takes over again with a write
        await bus.set_silence_timeout(unit, 0)
        await bus.set_level(unit, 40)
        back = await bus.poll(unit)
        assert not back.fallback
        assert back.level == 40
        await bus.sync_clock(unit, 0, rate=1)


async def test_offline_after_failures_and_back(lamp_target: LampTarget) -> None:
    absent = 77
    s = settings(lamp_target, units=(*lamp_target.units, absent), timeout=0.2, retries=0)
    async with ModbusLampBus(s) as bus:
        events = bus.events()
        for _ in range(s.offline_after):
            with pytest.raises(TransportError):
                await bus.poll(absent)
        assert not bus.online(absent)
        statuses: list[NodeStatus] = []
        async with asyncio.timeout(5):
            while len(statuses) < 1:
                ev = await anext(events)
                if isinstance(ev, NodeStatus):
                    statuses.append(ev)
        assert statuses == [NodeStatus(absent, False, statuses[0].reason)]
        cycle = await bus.poll_all()
        assert all(isinstance(cycle[u], LampReading) for u in lamp_target.units)
        assert isinstance(cycle[absent], TransportError)


async def test_commands_go_ahead_of_polls(lamp_target: LampTarget) -> None:
    unit = lamp_target.units[0]
    async with ModbusLampBus(settings(lamp_target)) as bus:
        polls = [asyncio.ensure_future(bus.poll(unit)) for _ in range(20)]
        await asyncio.sleep(0)
        await bus.set_level(unit, 33)  # queued after 20 polls, served before most of them
        done_before = sum(p.done() for p in polls)
        readings = await asyncio.gather(*polls)
        assert done_before < 10
        assert sum(r.level == 33 for r in readings) >= 10


async def test_babbling_device_master_stays_responsive(lamp_target: LampTarget) -> None:
    if lamp_target.line is None:
        pytest.skip("needs the emulated line to inject a babbler")
    unit = lamp_target.units[0]
    rng = random.Random(3)
    stop = asyncio.Event()

    async def babbler() -> None:
        while not stop.is_set():
            lamp_target.line.babble(rng.randbytes(rng.randint(1, 64)))  # type: ignore[union-attr]
            await asyncio.sleep(0.005)

    async with ModbusLampBus(settings(lamp_target, timeout=0.2, retries=1)) as bus:
        task = asyncio.create_task(babbler())
        outcomes: list[str] = []
        async with asyncio.timeout(30):  # every call returns: nothing hangs
            for i in range(15):
                try:
                    await bus.set_level(unit, i)
                    await bus.poll(unit)
                    outcomes.append("ok")
                except (TransportError, ProtocolError) as exc:
                    outcomes.append(type(exc).__name__)
        stop.set()
        await task
        assert len(outcomes) == 15
        await asyncio.sleep(0.1)
        await bus.set_level(unit, 42)  # once the babbler stops, the bus works at once
        r = await bus.poll(unit)
        assert r.level == 42
        assert bus.online(unit)
