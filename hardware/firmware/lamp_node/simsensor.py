"""A simulated lamp sensor for the unix board and the in-process emulation: the electrical
model of hardware/REGISTERS.md (1.5 W standby + 100 W x level %, 230.0 V) applied to the level
the PWM really got, with injectable faults: ``open`` (lamp draws nothing), ``short`` (3 A),
``driver`` (the driver ignores dimming and stays at full power). Allocates nothing per read.
Must not import: board modules, machine."""

try:
    from hardware.firmware.lamp_node import regs  # type: ignore[import-not-found, unused-ignore]
except ImportError:  # MicroPython
    import regs  # type: ignore[import-not-found, no-redef, unused-ignore]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fwtypes import LevelSource

OK = 0
OPEN = 1
SHORT = 2
DRIVER = 3
NAMES = ("ok", "open", "short", "driver")


class SimSensor:
    def __init__(self, pwm: "LevelSource") -> None:
        self.pwm = pwm
        self.fault = OK

    def read(self, out: "list[int]") -> None:
        level = self.pwm.level
        if level < 0:
            level = 0
        f = self.fault
        if f == OPEN:
            level = 0
        elif f == DRIVER:
            level = 100
        v = regs.VOLTAGE_DV
        p = regs.STANDBY_DW + regs.RATED_DW * level // 100
        i = p * 1000 // v
        if f == SHORT:
            i = 3000
            p = v * i // 10000
        out[0] = v
        out[1] = i
        out[2] = p
