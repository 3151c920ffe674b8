"""Board layer for an RP2040 lamp node: machine.UART behind an RS-485 transceiver (driver
enable on a pin), machine.PWM driving the 0-10 V / PWM dimming input of the LED driver, two
ADC channels measuring the lamp (current through a shunt amplifier, mains voltage through an
isolated divider), machine.WDT, machine.RTC and the littlefs flash.

Calibration is in parameters (``ma_per_count``, ``dv_per_count``; ADC counts are read_u16).
Power is V x I (the driver's power factor is near 1 above 20 % load; a metering chip would
measure it directly). The RP2040's RTC keeps counting through a watchdog or soft reset but not
a power cut: after power-up it reads 2021-01-01, which ``rtc_read`` rejects (no valid time).
Must not import: application modules. Pins are parameters: no hardware singletons at import.
"""

import time

try:
    from hardware.firmware.common.watchdog import Rp2Watchdog  # type: ignore[import-not-found, unused-ignore]
except ImportError:  # MicroPython
    from watchdog import Rp2Watchdog  # type: ignore[import-not-found, no-redef, unused-ignore]

import machine
from machine import ADC, PWM, RTC, UART, Pin

_EPOCH_2000 = 946684800  # unix time of 2000-01-01; time.time() on rp2 counts from 1970
_VALID_AFTER = 757382400  # 2024-01-01 in seconds since 2000: older RTC values are power-up junk


class Rp2Pwm:
    def __init__(self, pin: int, freq: int = 1000) -> None:
        self._pwm = PWM(Pin(pin))
        self._pwm.freq(freq)
        self.level = -1

    def set_level(self, level: int) -> None:
        self.level = level
        self._pwm.duty_u16(level * 65535 // 100)


class Rp2Sensor:
    """Lamp current and mains voltage from two ADC inputs (GP26 = ADC0, GP27 = ADC1)."""

    def __init__(self, current_adc: int = 26, voltage_adc: int = 27, ma_per_count: int = 16,
                 dv_per_count: int = 64, counts_shift: int = 4) -> None:
        self._i = ADC(Pin(current_adc))
        self._v = ADC(Pin(voltage_adc))
        self._ma = ma_per_count
        self._dv = dv_per_count
        self._shift = counts_shift  # read_u16 is a 12-bit reading scaled to 16 bits

    def read(self, out: "list[int]") -> None:
        i = (self._i.read_u16() >> self._shift) * self._ma // 16
        v = (self._v.read_u16() >> self._shift) * self._dv // 16
        out[0] = v
        out[1] = i
        out[2] = v * i // 10000  # 0.1 V x mA = 0.1 mW x 1000 -> 0.1 W


class Rp2Board:
    def __init__(self, uart_id: int = 0, tx: int = 0, rx: int = 1, de: int = 2,
                 pwm_pin: int = 15, baudrate: int = 9600) -> None:
        self._uart = UART(uart_id, baudrate=baudrate, tx=Pin(tx), rx=Pin(rx), timeout=0)
        self._de = Pin(de, Pin.OUT, value=0)
        self._one = bytearray(1)
        self.pwm = Rp2Pwm(pwm_pin)
        self.sensor = Rp2Sensor()
        self.closed = False
        self._watchdog = Rp2Watchdog()
        self._cause = 1 if machine.reset_cause() == machine.WDT_RESET else 0

    def ticks_ms(self) -> int:
        return int(time.ticks_ms())

    def ticks_diff(self, a: int, b: int) -> int:
        return int(time.ticks_diff(a, b))

    def wait_rx(self, timeout_ms: int) -> bool:
        deadline = time.ticks_add(time.ticks_ms(), timeout_ms)
        while not self._uart.any():
            if time.ticks_diff(deadline, time.ticks_ms()) <= 0:
                return False
            time.sleep_ms(1)
        return True

    def read_byte(self) -> int:
        if not self._uart.any():
            return -1
        if not self._uart.readinto(self._one, 1):
            return -1
        return self._one[0]

    def write(self, buf: bytearray, n: int) -> None:
        self._de.value(1)
        self._uart.write(memoryview(buf)[:n])
        self._uart.flush()  # wait until the last stop bit left before releasing the line
        self._de.value(0)

    def path(self, name: str) -> str:
        return "/" + name

    def fs_step(self, n: int) -> None:
        pass

    def rtc_read(self) -> int:
        s = int(time.time()) - _EPOCH_2000
        return s if s >= _VALID_AFTER else -1

    def rtc_write(self, seconds: int, rate: int) -> None:
        t = time.gmtime(seconds + _EPOCH_2000)
        RTC().datetime((t[0], t[1], t[2], t[6], t[3], t[4], t[5], 0))

    def reset_cause(self) -> int:
        return self._cause

    def wdt_start(self, timeout_ms: int) -> None:
        self._watchdog.start(timeout_ms)

    def wdt_feed(self) -> None:
        self._watchdog.feed()
