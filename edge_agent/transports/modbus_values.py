"""What a lamp node's registers mean to the gateway: readings, online/offline news, programs.

Owns: ``LampReading`` (one routine poll in engineering units) and ``decode_reading`` (an input
register block to a reading), ``NodeStatus`` (a node went online or offline) and ``LampProgram``
(a stored fallback program to holding registers), all per the register map
(``edge_agent.codec.registers``, documented in hardware/REGISTERS.md). The bus scheduler that
moves them is edge_agent/transports/modbus_bus.py.
Must not import: anything of ours but the register map and the errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from edge_agent.codec import registers as regmap
from edge_agent.errors import ProtocolError

__all__ = ["LampProgram", "LampReading", "NodeStatus", "decode_reading"]


@dataclass(frozen=True)
class LampReading:
    """One routine poll of a lamp node, in engineering units."""

    unit: int
    online: bool
    on: bool
    level: int  # percent applied now
    voltage_v: float
    current_a: float
    power_w: float
    energy_wh: int
    burn_hours: float
    fault_bits: int
    firmware_version: int
    program_version: int
    fallback: bool  # the node runs its stored program (master silence)
    clock_s: int  # node clock, seconds since 2000-01-01 local


@dataclass(frozen=True)
class NodeStatus:
    """A node went online or offline."""

    unit: int
    online: bool
    reason: str = ""


@dataclass(frozen=True)
class LampProgram:
    """A stored fallback program: (minute of day, level percent) steps, level 0 = off."""

    version: int
    steps: tuple[tuple[int, int], ...]

    def to_registers(self) -> list[int]:
        if len(self.steps) > regmap.PROGRAM_MAX_STEPS:
            raise ProtocolError("program_too_long", detail=f"{len(self.steps)} steps")
        regs = [self.version & 0xFFFF, len(self.steps)]
        for minute, level in self.steps:
            if not (0 <= minute < 1440 and 0 <= level <= 100):
                raise ProtocolError("bad_program_step", detail=f"({minute}, {level})")
            regs += [minute, level]
        return regs


def decode_reading(unit: int, regs: Sequence[int]) -> LampReading:
    """Input registers 0..IR_COUNT-1 of one node to a reading; ProtocolError on a bad block."""
    if len(regs) != regmap.IR_COUNT:
        raise ProtocolError("bad_count", where=f"unit {unit}", detail=f"{len(regs)} registers")
    if any(not 0 <= r <= 0xFFFF for r in regs):
        raise ProtocolError("bad_value", where=f"unit {unit}")
    return LampReading(
        unit=unit,
        online=True,
        on=bool(regs[regmap.IR_ACTUAL_ON]),
        level=regs[regmap.IR_ACTUAL_LEVEL],
        voltage_v=regs[regmap.IR_VOLTAGE] / 10.0,
        current_a=regs[regmap.IR_CURRENT] / 1000.0,
        power_w=regs[regmap.IR_POWER] / 10.0,
        energy_wh=(regs[regmap.IR_ENERGY_HI] << 16) | regs[regmap.IR_ENERGY_LO],
        burn_hours=((regs[regmap.IR_BURN_HI] << 16) | regs[regmap.IR_BURN_LO]) / 100.0,
        fault_bits=regs[regmap.IR_FAULTS],
        firmware_version=regs[regmap.IR_FW_VERSION],
        program_version=regs[regmap.IR_PROGRAM_VERSION],
        fallback=regs[regmap.IR_MODE] == regmap.MODE_FALLBACK,
        clock_s=(regs[regmap.IR_CLOCK_HI] << 16) | regs[regmap.IR_CLOCK_LO],
    )
