"""Board layer for an RP2040 lamp node: machine.UART behind an RS-485 transceiver (driver
enable on a pin) and machine.PWM driving the 0-10 V / PWM dimming input of the LED driver.

Must not import: application modules. Pins are parameters: no hardware singletons at import.
"""

import time

from machine import PWM, UART, Pin


class Rp2Pwm:
    def __init__(self, pin: int, freq: int = 1000) -> None:
        self._pwm = PWM(Pin(pin))
        self._pwm.freq(freq)

    def set_level(self, level: int) -> None:
        self._pwm.duty_u16(level * 65535 // 100)


class Rp2Board:
    def __init__(self, uart_id: int = 0, tx: int = 0, rx: int = 1, de: int = 2,
                 pwm_pin: int = 15, baudrate: int = 9600) -> None:
        self._uart = UART(uart_id, baudrate=baudrate, tx=Pin(tx), rx=Pin(rx), timeout=0)
        self._de = Pin(de, Pin.OUT, value=0)
        self._one = bytearray(1)
        self.pwm = Rp2Pwm(pwm_pin)
        self.closed = False

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
