"""Lamp node application state: holding/input registers, measured electrical values, lamp
fault diagnosis, the node clock and the local fallback program (moved with the seasons by the
node's own sun maths). No I/O: the PWM output and the lamp sensor are injected.

Must not import: the board modules, anything that allocates per tick (the sun is computed once
per night; everything on the poll and tick path is small-int arithmetic on preallocated lists).
"""

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fwtypes import Pwm, Sensor

try:
    from hardware.firmware.lamp_node import regs  # type: ignore[import-not-found, unused-ignore]
    from hardware.firmware.lamp_node import sun  # type: ignore[import-not-found, unused-ignore]
except ImportError:  # MicroPython: firmware files are top-level modules
    import regs  # type: ignore[import-not-found, no-redef, unused-ignore]
    import sun  # type: ignore[import-not-found, no-redef, unused-ignore]

_MS_PER_WH_DW = 36000000  # 0.1 W * ms in one Wh
_MS_PER_BURN_UNIT = 36000  # 0.01 h
_CONFIRM_MS = 500  # a lamp diagnosis must hold this long (real time) to be reported or cleared
_FULL_MA = (regs.STANDBY_DW + regs.RATED_DW) * 1000 // regs.VOLTAGE_DV
_SHORT_MA = _FULL_MA * 3 // 2  # above 1.5x the full-load current: shorted lamp
_CLOCK_SAVE_S = 21600  # persist the last known time every 6 node-hours (flash wear: 4 a day)
SAFE_LEVEL = 100  # clock unknown after a cold boot without RTC: lit until the master syncs
STATE_WORDS = 35  # persisted record, u16 big-endian words (layout in to_state)
_STATE_LAYOUT = 1
_LAT_MAX = 9000
_LON_MAX = 18000
_PERSISTED_FROM = regs.HR_PROGRAM_VERSION  # HR 6..31 and HR_SILENCE_TIMEOUT are persisted


def signed(v: int) -> int:
    return v - 65536 if v >= 32768 else v


class Lamp:
    """Registers and behaviour of one lamp controller."""

    def __init__(self, pwm: "Pwm", sensor: "Sensor") -> None:
        self.pwm = pwm
        self.sensor = sensor
        self.hr = [0] * regs.HR_COUNT
        hr = self.hr
        hr[regs.HR_ON] = 1
        hr[regs.HR_LEVEL] = 100
        hr[regs.HR_CLOCK_RATE] = 1
        hr[regs.HR_ON_KIND] = regs.SWITCH_CLOCK
        hr[regs.HR_OFF_KIND] = regs.SWITCH_CLOCK
        hr[regs.HR_UNIT] = 1
        self.ir = [0] * regs.IR_COUNT
        self.ir[regs.IR_FW_VERSION] = regs.FIRMWARE_VERSION
        self.meas = [0, 0, 0]  # voltage 0.1 V, current mA, power 0.1 W (from the sensor)
        self.clock_s = 0  # node local time, seconds since 2000-01-01
        self.clock_set = False
        self.clock_synced = False  # set on a clock write; the app copies it into the RTC
        self._clock_acc = 0  # node-ms not yet folded into clock_s
        self._silent_ms = 0  # node-ms since the master last addressed us (capped)
        self._energy_acc = 0
        self._burn_acc = 0
        self.energy_wh = 0
        self.burn = 0
        self.fallback = False
        self.dirty = False  # persisted settings changed: the app saves them
        self._saved_clock = 0
        self.storage_fault = False
        self.wdt_reset = False
        self.lamp_faults = 0  # confirmed FAULT_LAMP | FAULT_LAMP_* / FAULT_DRIVER bits
        self._cand = 0
        self._cand_ms = 0
        self._night = -1  # night (local day) the sun switch minutes below belong to
        self._on_min = -1
        self._off_min = -1
        self._applied = -1
        self._apply()

    # --- persistence (the app owns the Store; these only convert) ------------------------------
    def to_state(self, buf: bytearray) -> None:
        """Fill ``buf`` (2 * STATE_WORDS bytes): layout, silence timeout, HR 6..31, clock,
        energy, burn, clock-valid flag."""
        hr = self.hr
        w = [_STATE_LAYOUT, hr[regs.HR_SILENCE_TIMEOUT]] + hr[_PERSISTED_FROM:regs.HR_COUNT]
        for v in (self.clock_s, self.energy_wh, self.burn):
            w.append((v >> 16) & 0xFFFF)
            w.append(v & 0xFFFF)
        w.append(1 if self.clock_set else 0)
        for i in range(STATE_WORDS):
            buf[2 * i] = w[i] >> 8
            buf[2 * i + 1] = w[i] & 0xFF
        self._saved_clock = self.clock_s
        self.dirty = False

    def restore(self, data: bytes) -> bool:
        """Settings from a stored record; False (nothing changed) if its layout is unknown."""
        if len(data) != 2 * STATE_WORDS:
            return False
        w = [(data[2 * i] << 8) | data[2 * i + 1] for i in range(STATE_WORDS)]
        if w[0] != _STATE_LAYOUT:
            return False
        n = regs.HR_COUNT - _PERSISTED_FROM
        for i in range(n):
            if not self.valid_write(_PERSISTED_FROM + i, w[2 + i]):
                return False
        self.hr[regs.HR_SILENCE_TIMEOUT] = w[1]
        self.hr[_PERSISTED_FROM:regs.HR_COUNT] = w[2 : 2 + n]
        k = 2 + n
        self.clock_s = (w[k] << 16) | w[k + 1]  # last known time: a lower bound, not trusted
        self.energy_wh = (w[k + 2] << 16) | w[k + 3]
        self.burn = (w[k + 4] << 16) | w[k + 5]
        self._saved_clock = self.clock_s
        self._night = -1
        self._apply()
        return True

    def boot(self, rtc_s: int, wdt_reset: bool, storage_fault: bool) -> None:
        """After restore: the RTC's time (-1 without one), why we booted, whether the stored
        settings were unreadable. With a stored program the node starts in fallback (no master
        has spoken yet); without a trusted clock it is lit at SAFE_LEVEL until synced."""
        if rtc_s >= 0:
            self.clock_s = rtc_s
            self.clock_set = True
        self._saved_clock = self.clock_s
        self.wdt_reset = wdt_reset
        self.storage_fault = storage_fault
        if self.hr[regs.HR_PROGRAM_COUNT] > 0:
            self.fallback = True
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
        if addr == regs.HR_LATITUDE:
            return -_LAT_MAX <= signed(value) <= _LAT_MAX
        if addr == regs.HR_LONGITUDE:
            return -_LON_MAX <= signed(value) <= _LON_MAX
        if addr == regs.HR_UTC_OFFSET:
            return -840 <= signed(value) <= 840
        if addr == regs.HR_ON_KIND or addr == regs.HR_OFF_KIND:
            return bool(value <= regs.SWITCH_CLOCK)
        if addr == regs.HR_ON_OFFSET or addr == regs.HR_OFF_OFFSET:
            return -720 <= signed(value) <= 720
        if addr == regs.HR_UNIT:
            return 1 <= value <= 247
        if addr >= regs.HR_PROGRAM_BASE:
            if (addr - regs.HR_PROGRAM_BASE) & 1:
                return value <= 100
            return value < 1440
        return True

    def write(self, addr: int, value: int) -> None:
        """A holding-register write: the master is in control again, so fallback ends."""
        self.hr[addr] = value
        self.fallback = False
        self.wdt_reset = False
        self._silent_ms = 0
        if addr == regs.HR_CLOCK_LO:
            self.clock_s = (self.hr[regs.HR_CLOCK_HI] << 16) | value
            self._clock_acc = 0
            self.clock_set = True
            self.clock_synced = True
            self.dirty = True  # the last known time
        elif addr == regs.HR_CLOCK_RATE:
            self.clock_synced = True
        elif addr == regs.HR_SILENCE_TIMEOUT or addr >= _PERSISTED_FROM:
            self.dirty = True
            self.storage_fault = False  # the master is rewriting the settings
            self._night = -1  # program or location changed: recompute tonight's switch times
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
        if self.clock_set and self.clock_s - self._saved_clock >= _CLOCK_SAVE_S:
            self.dirty = True
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
        cand = self.diagnose()
        if cand != self._cand:
            self._cand = cand
            self._cand_ms = 0
        elif self._cand_ms < _CONFIRM_MS:
            self._cand_ms += real_ms
        elif cand != self.lamp_faults:
            self.lamp_faults = cand
            self._apply()

    # --- measurement ---------------------------------------------------------------------------
    def diagnose(self) -> int:
        """Lamp fault bits the present measurement shows at the applied level (0 = healthy)."""
        m = self.meas
        if m[1] > _SHORT_MA:
            return int(regs.FAULT_LAMP | regs.FAULT_LAMP_SHORT)
        level = self._applied
        lamp_dw = m[2] - regs.STANDBY_DW
        expected = regs.RATED_DW * level // 100
        if level > 0 and lamp_dw * 10 < expected:
            return int(regs.FAULT_LAMP | regs.FAULT_LAMP_OPEN)
        diff = lamp_dw - expected
        if diff < 0:
            diff = -diff
        if diff * 10 > regs.RATED_DW * 3:
            return int(regs.FAULT_LAMP | regs.FAULT_DRIVER)
        return 0

    # --- outputs -------------------------------------------------------------------------------
    def _sun_minutes(self, minute: int) -> None:
        """Tonight's switch minutes from the node's sun maths (once per night: allocates)."""
        day = self.clock_s // 86400
        night = day if minute >= 720 else day - 1
        if night == self._night:
            return
        hr = self.hr
        self._on_min, self._off_min = sun.night(
            night, signed(hr[regs.HR_LATITUDE]) / 100.0, signed(hr[regs.HR_LONGITUDE]) / 100.0,
            signed(hr[regs.HR_UTC_OFFSET]), hr[regs.HR_ON_KIND], signed(hr[regs.HR_ON_OFFSET]),
            hr[regs.HR_OFF_KIND], signed(hr[regs.HR_OFF_OFFSET]))
        self._night = night

    def program_level(self) -> int:
        """Level of the stored program at the node's minute of day; -1 if no valid program.

        Clock programs (HR_ON_KIND and HR_OFF_KIND = SWITCH_CLOCK, firmware 1.x): the step
        with the latest minute <= now, or before the first step the last one. Sun programs (a
        SUN or CIVIL kind and at least 2 steps): step 0 is on, moved to tonight's dusk, the last
        step is off, moved to tomorrow's dawn; between them the latest middle step applies."""
        hr = self.hr
        count = hr[regs.HR_PROGRAM_COUNT]
        if count == 0 or count > regs.PROGRAM_MAX_STEPS:
            return -1
        minute = (self.clock_s // 60) % 1440
        base = regs.HR_PROGRAM_BASE
        if count >= 2 and (hr[regs.HR_ON_KIND] != regs.SWITCH_CLOCK
                           or hr[regs.HR_OFF_KIND] != regs.SWITCH_CLOCK):
            self._sun_minutes(minute)
            on = self._on_min if self._on_min >= 0 else hr[base]
            last = base + 2 * (count - 1)
            off = self._off_min if self._off_min >= 0 else hr[last]
            now_n = (minute + 720) % 1440  # minutes since local noon: a night in order
            on_n = (on + 720) % 1440
            off_n = 1440 if off >= sun.NIGHT_END else (off + 720) % 1440  # polar night: to noon
            if now_n < on_n or now_n >= off_n:
                return int(hr[last + 1])
            level = hr[base + 1]
            best = on_n
            for i in range(1, count - 1):
                n = (hr[base + 2 * i] + 720) % 1440
                if best <= n <= now_n:
                    best = n
                    level = hr[base + 2 * i + 1]
            return int(level)
        best_min = -1
        best_level = -1
        last_min = -1
        last_level = -1
        for i in range(count):
            m = hr[base + 2 * i]
            lvl = hr[base + 2 * i + 1]
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
        faults = self.lamp_faults
        if not self.clock_set:
            faults |= regs.FAULT_CLOCK_UNSET
        if self.storage_fault:
            faults |= regs.FAULT_STORAGE
        if self.wdt_reset:
            faults |= regs.FAULT_WDT_RESET
        level = hr[regs.HR_LEVEL] if hr[regs.HR_ON] else 0
        if self.fallback:
            faults |= regs.FAULT_MASTER_SILENT
            p = self.program_level()
            if p < 0:
                faults |= regs.FAULT_PROGRAM
            elif not self.clock_set:
                level = SAFE_LEVEL  # a program but no trusted time: lit until synced
            else:
                level = p
        if level != self._applied:
            self.pwm.set_level(level)
            self._applied = level
        m = self.meas
        self.sensor.read(m)
        ir[regs.IR_VOLTAGE] = m[0]
        ir[regs.IR_CURRENT] = m[1]
        ir[regs.IR_POWER] = m[2]
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
