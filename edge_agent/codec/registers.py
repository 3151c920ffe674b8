"""The lamp node Modbus register map: our contract between the gateway and lamp controllers.

Owns: register addresses, counts, scaling and fault bits (documented in hardware/REGISTERS.md).
It lives beside the frame codec because it is the same kind of contract, but unlike ``crc`` and
``frames`` it is not copied onto the device: the firmware keeps its own ``const()`` copy in
hardware/firmware/lamp_node/regs.py, and tests/test_modbus_bus.py checks that the two agree.
Must not import: anything of ours.

All addresses are zero-based protocol addresses. Holding registers (FC 03 read, FC 06/16
write) are settings the gateway owns; input registers (FC 04) are readings the node owns.
"""

from typing import Final

FIRMWARE_VERSION: Final = 0x0200  # major << 8 | minor, reported in IR_FW_VERSION

# --- holding registers -------------------------------------------------------------------------
HR_LEVEL: Final = 0  # setpoint dim level, percent 0..100
HR_ON: Final = 1  # 0 = off, 1 = on
HR_SILENCE_TIMEOUT: Final = 2  # master-silence timeout in seconds (node clock); 0 = never
HR_CLOCK_HI: Final = 3  # clock sync: local time, seconds since 2000-01-01, high word
HR_CLOCK_LO: Final = 4  # ... low word; writing LO latches the clock
HR_CLOCK_RATE: Final = 5  # node clock speed factor, 1 = real time (test and demo hook)
HR_PROGRAM_VERSION: Final = 6  # opaque id of the stored fallback program
HR_PROGRAM_COUNT: Final = 7  # number of valid program steps, 0..PROGRAM_MAX_STEPS
HR_PROGRAM_BASE: Final = 8  # step i: minute of day at +2i, level percent at +2i+1 (0 = off)
PROGRAM_MAX_STEPS: Final = 8
# firmware 2.0: the node computes its own dusk and dawn (signed values are two's complement)
HR_LATITUDE: Final = 24  # 0.01 degree, signed (north positive)
HR_LONGITUDE: Final = 25  # 0.01 degree, signed (east positive)
HR_UTC_OFFSET: Final = 26  # minutes, signed: offset of the node clock's local time from UTC
HR_ON_KIND: Final = 27  # SWITCH_*: how the node moves step 0 (on) every evening
HR_ON_OFFSET: Final = 28  # minutes, signed, added to sunset / dusk
HR_OFF_KIND: Final = 29  # SWITCH_*: how the node moves the last step (off) every morning
HR_OFF_OFFSET: Final = 30  # minutes, signed, added to sunrise / dawn
HR_UNIT: Final = 31  # unit address 1..247 (persisted; answers at the new address after the reply)
HR_COUNT: Final = 32  # holding registers

SWITCH_SUN: Final = 0  # sunset / sunrise + offset
SWITCH_CIVIL: Final = 1  # civil dusk / dawn + offset
SWITCH_CLOCK: Final = 2  # the stored step minute as is (default: firmware 1.x behaviour)

# --- input registers ---------------------------------------------------------------------------
IR_VOLTAGE: Final = 0  # supply voltage, 0.1 V
IR_CURRENT: Final = 1  # lamp current, mA
IR_POWER: Final = 2  # active power, 0.1 W
IR_ENERGY_HI: Final = 3  # energy since commissioning, Wh, 32 bit (hi, lo)
IR_ENERGY_LO: Final = 4
IR_BURN_HI: Final = 5  # burn time (lamp on), 0.01 h, 32 bit (hi, lo)
IR_BURN_LO: Final = 6
IR_FAULTS: Final = 7  # fault bits, see FAULT_*
IR_FW_VERSION: Final = 8  # firmware version, major << 8 | minor
IR_MODE: Final = 9  # MODE_REMOTE or MODE_FALLBACK
IR_ACTUAL_LEVEL: Final = 10  # level applied to the driver now, percent (0 when off)
IR_ACTUAL_ON: Final = 11  # 1 when the lamp is lit now
IR_CLOCK_HI: Final = 12  # node clock, seconds since 2000-01-01 local (hi, lo)
IR_CLOCK_LO: Final = 13
IR_PROGRAM_VERSION: Final = 14  # copy of HR_PROGRAM_VERSION, so one poll reads everything
IR_COUNT: Final = 15  # one FC 04 read of IR_COUNT registers from 0 is the routine poll

MODE_REMOTE: Final = 0
MODE_FALLBACK: Final = 1

FAULT_LAMP: Final = 0x0001  # lamp commanded on but draws no current
FAULT_CLOCK_UNSET: Final = 0x0002  # clock never synchronised since power-up
FAULT_PROGRAM: Final = 0x0004  # stored program invalid (count or step out of range)
FAULT_MASTER_SILENT: Final = 0x0008  # master silent longer than HR_SILENCE_TIMEOUT
# firmware 2.0; each lamp diagnosis below also sets FAULT_LAMP (the bit the gateway alerts on)
FAULT_LAMP_OPEN: Final = 0x0010  # lit but the lamp draws (almost) no current
FAULT_LAMP_SHORT: Final = 0x0020  # current above 1.5x the full-load current
FAULT_DRIVER: Final = 0x0040  # measured power does not follow the dim command (driver failure)
FAULT_STORAGE: Final = 0x0080  # no valid stored settings at boot: running the safe defaults
FAULT_WDT_RESET: Final = 0x0100  # the node was rebooted by its watchdog (cleared by a write)

# Simulated electrical model of the firmware's unix board (docs/DOMAIN.md#lighting: 60-150 W luminaires,
# 1-3 W smart node standby).
RATED_POWER_W: Final = 100.0
STANDBY_POWER_W: Final = 1.5
NOMINAL_VOLTAGE_V: Final = 230.0

# Modbus exception codes the node answers with.
EXC_ILLEGAL_FUNCTION: Final = 1
EXC_ILLEGAL_ADDRESS: Final = 2
EXC_ILLEGAL_VALUE: Final = 3


def expected_power_w(level: int, on: bool) -> float:
    """Power the simulated node reports for a level (the unix board's model)."""
    return STANDBY_POWER_W + (RATED_POWER_W * level / 100.0 if on else 0.0)


def site_registers(
    latitude: float,
    longitude: float,
    utc_offset_minutes: float,
    on_kind: int,
    on_offset: float,
    off_kind: int,
    off_offset: float,
) -> list[int]:
    """HR_LATITUDE..HR_OFF_OFFSET (24-30) as written: signed values in two's complement,
    offsets clamped to +-720 min and 0 for a clock switch (its minute is the program step's)."""

    def s16(v: float, limit: int) -> int:
        return max(-limit, min(limit, round(v))) & 0xFFFF

    return [
        s16(latitude * 100, 9000),
        s16(longitude * 100, 18000),
        s16(utc_offset_minutes, 840),
        on_kind,
        s16(on_offset if on_kind != SWITCH_CLOCK else 0, 720),
        off_kind,
        s16(off_offset if off_kind != SWITCH_CLOCK else 0, 720),
    ]
