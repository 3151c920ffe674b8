"""The register map as const() for the firmware: a copy of edge_agent/codec/registers.py.
tests/test_modbus_bus.py checks that every name here agrees with that module.
Must not import: anything but micropython.const."""

try:
    from micropython import const
except ImportError:  # CPython (in-process emulation, tests)

    def const(value: int) -> int:  # type: ignore[misc, unused-ignore]
        return value


FIRMWARE_VERSION = const(0x0200)

HR_LEVEL = const(0)
HR_ON = const(1)
HR_SILENCE_TIMEOUT = const(2)
HR_CLOCK_HI = const(3)
HR_CLOCK_LO = const(4)
HR_CLOCK_RATE = const(5)
HR_PROGRAM_VERSION = const(6)
HR_PROGRAM_COUNT = const(7)
HR_PROGRAM_BASE = const(8)
PROGRAM_MAX_STEPS = const(8)
HR_LATITUDE = const(24)
HR_LONGITUDE = const(25)
HR_UTC_OFFSET = const(26)
HR_ON_KIND = const(27)
HR_ON_OFFSET = const(28)
HR_OFF_KIND = const(29)
HR_OFF_OFFSET = const(30)
HR_UNIT = const(31)
HR_COUNT = const(32)

SWITCH_SUN = const(0)
SWITCH_CIVIL = const(1)
SWITCH_CLOCK = const(2)

IR_VOLTAGE = const(0)
IR_CURRENT = const(1)
IR_POWER = const(2)
IR_ENERGY_HI = const(3)
IR_ENERGY_LO = const(4)
IR_BURN_HI = const(5)
IR_BURN_LO = const(6)
IR_FAULTS = const(7)
IR_FW_VERSION = const(8)
IR_MODE = const(9)
IR_ACTUAL_LEVEL = const(10)
IR_ACTUAL_ON = const(11)
IR_CLOCK_HI = const(12)
IR_CLOCK_LO = const(13)
IR_PROGRAM_VERSION = const(14)
IR_COUNT = const(15)

MODE_REMOTE = const(0)
MODE_FALLBACK = const(1)

FAULT_LAMP = const(0x0001)
FAULT_CLOCK_UNSET = const(0x0002)
FAULT_PROGRAM = const(0x0004)
FAULT_MASTER_SILENT = const(0x0008)
FAULT_LAMP_OPEN = const(0x0010)
FAULT_LAMP_SHORT = const(0x0020)
FAULT_DRIVER = const(0x0040)
FAULT_STORAGE = const(0x0080)
FAULT_WDT_RESET = const(0x0100)

EXC_ILLEGAL_FUNCTION = const(1)
EXC_ILLEGAL_ADDRESS = const(2)
EXC_ILLEGAL_VALUE = const(3)

# Electrical model in register units: 0.1 W and 0.1 V.
STANDBY_DW = const(15)  # 1.5 W
RATED_DW = const(1000)  # 100 W at 100 %
VOLTAGE_DV = const(2300)  # 230.0 V
