"""Lamp node application state: holding/input registers, the electrical model, the node clock
and the local fallback program. No I/O: the PWM output is injected (``pwm.set_level``).

Must not import: the board modules, anything that allocates per tick.
"""

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fwtypes import Pwm

try:
    from hardware.firmware.lamp_node import regs  # type: ignore[import-not-found, unused-ignore]
except ImportError:  # MicroPython: firmware files are top-level modules
    import regs  # type: ignore[import-not-found, no-redef, unused-ignore]

_MS_PER_WH_DW = 36000000  # 0.1 W * ms in one Wh
_MS_PER_BURN_UNIT = 36000  # 0.01 h


class Lamp:
    """Registers and behaviour of one lamp controller."""

    def __init__(self, pwm: "Pwm") -> None:
        self.pwm = pwm
        self.hr = [0] * regs.HR_COUNT
        self.hr[regs.HR_ON] = 1
        self.hr[regs.HR_LEVEL] = 100
        self.hr[regs.HR_CLOCK_RATE] = 1
        self.ir = [0] * regs.IR_COUNT
        self.ir[regs.IR_FW_VERSION] = regs.FIRMWARE_VERSION
        self.ir[regs.IR_VOLTAGE] = regs.VOLTAGE_DV
        self.clock_s = 0  # node local time, seconds since 2000-01-01
        self.clock_set = False
        self._clock_acc = 0  # node-ms not yet folded into clock_s
        self._silent_ms = 0  # node-ms since the master last addressed us (capped)
        self._energy_acc = 0
        self._burn_acc = 0
        self.energy_wh = 0
        self.burn = 0
        self.fallback = False
        self._applied = -1
        self._apply()

    # --- register access (called by the RTU slave) -------------------------------------------
    def valid_write(self, addr: int, value: int) -> bool:
        if addr == regs.HR_LEVEL:
            return value <= 100
        if addr == regs.HR_ON:
            return value <= 1
        if addr == regs.HR_CLOCK_RATE:
            return 1 <= value <= 10000
        if addr == regs.HR_PROGRAM_COUNT:
            return bool(value <= regs.PROGRAM_MAX_STEPS)
        if addr >= regs.HR_PROGRAM_BASE:
            if (addr - regs.HR_PROGRAM_BASE) & 1:
                return value <= 100
            return value < 1440
        return True

    def write(self, addr: int, value: int) -> None:
        """A holding-register write: the master is in control again, so fallback ends."""
        self.hr[addr] = value
        self.fallback = False
        self._silent_ms = 0
        if addr == regs.HR_CLOCK_LO:
            self.clock_s = (self.hr[regs.HR_CLOCK_HI] << 16) | value
            self._clock_acc = 0
            self.clock_set = True
        self._apply()

    def master_seen(self) -> None:
        """A valid request addressed to this node arrived: restart the silence timer. A read
        does not end fallback (so the master can see it); a write does."""
        self._silent_ms = 0

    # --- time ----------------------------------------------------------------------------------
    def tick(self, real_ms: int) -> None:
        """Advance by ``real_ms`` of real time (node time runs HR_CLOCK_RATE times faster)."""
        if real_ms <= 0:
            return
        if real_ms > 1000:
            real_ms = 1000
        d = real_ms * self.hr[regs.HR_CLOCK_RATE]
        acc = self._clock_acc + d
        if acc >= 1000:
            self.clock_s += acc // 1000
            acc %= 1000
        self._clock_acc = acc
        timeout_s = self.hr[regs.HR_SILENCE_TIMEOUT]
        if timeout_s:
            if self._silent_ms < timeout_s * 1000:
                self._silent_ms += d
            if self._silent_ms >= timeout_s * 1000:
                self.fallback = True
        power = self.ir[regs.IR_POWER]
        e = self._energy_acc + power * d
        if e >= _MS_PER_WH_DW:
            self.energy_wh += e // _MS_PER_WH_DW
            e %= _MS_PER_WH_DW
        self._energy_acc = e
        if self.ir[regs.IR_ACTUAL_ON]:
            b = self._burn_acc + d
            if b >= _MS_PER_BURN_UNIT:
                self.burn += b // _MS_PER_BURN_UNIT
                b %= _MS_PER_BURN_UNIT
            self._burn_acc = b
        self._apply()

    # --- outputs -------------------------------------------------------------------------------
    def program_level(self) -> int:
        """Level of the stored program at the node's minute of day; -1 if no valid program."""
        hr = self.hr
        count = hr[regs.HR_PROGRAM_COUNT]
        if count == 0 or count > regs.PROGRAM_MAX_STEPS:
            return -1
        minute = (self.clock_s // 60) % 1440
        best_min = -1
        best_level = -1
        last_min = -1
        last_level = -1
        for i in range(count):
            m = hr[regs.HR_PROGRAM_BASE + 2 * i]
            lvl = hr[regs.HR_PROGRAM_BASE + 2 * i + 1]
            if m <= minute and m > best_min:
                best_min = m
                best_level = lvl
            if m > last_min:
                last_min = m
                last_level = lvl
        return best_level if best_min >= 0 else last_level  # before the first step: wrap

    def _apply(self) -> None:
        hr = self.hr
        ir = self.ir
        faults = 0
        if not self.clock_set:
            faults |= regs.FAULT_CLOCK_UNSET
        level = hr[regs.HR_LEVEL] if hr[regs.HR_ON] else 0
        if self.fallback:
            faults |= regs.FAULT_MASTER_SILENT
            p = self.program_level()
            if p < 0:
                faults |= regs.FAULT_PROGRAM
            else:
                level = p
        if level != self._applied:
            self.pwm.set_level(level)
            self._applied = level
        power = regs.STANDBY_DW + regs.RATED_DW * level // 100
        ir[regs.IR_POWER] = power
        ir[regs.IR_CURRENT] = power * 1000 // regs.VOLTAGE_DV
        ir[regs.IR_ACTUAL_LEVEL] = level
        ir[regs.IR_ACTUAL_ON] = 1 if level > 0 else 0
        ir[regs.IR_MODE] = regs.MODE_FALLBACK if self.fallback else regs.MODE_REMOTE
        ir[regs.IR_FAULTS] = faults
        ir[regs.IR_ENERGY_HI] = (self.energy_wh >> 16) & 0xFFFF
        ir[regs.IR_ENERGY_LO] = self.energy_wh & 0xFFFF
        ir[regs.IR_BURN_HI] = (self.burn >> 16) & 0xFFFF
        ir[regs.IR_BURN_LO] = self.burn & 0xFFFF
        ir[regs.IR_CLOCK_HI] = (self.clock_s >> 16) & 0xFFFF
        ir[regs.IR_CLOCK_LO] = self.clock_s & 0xFFFF
        ir[regs.IR_PROGRAM_VERSION] = hr[regs.HR_PROGRAM_VERSION]
