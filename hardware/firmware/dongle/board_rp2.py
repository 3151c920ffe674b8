"""Dongle board for an RP2040: the host link is UART0 (a USB-serial bridge), the radio module
delivers one text line per packet on UART1, machine.WDT is the watchdog, the flash is littlefs.
Pins are parameters. Must not import: app modules."""

import time

try:
    from hardware.firmware.common.watchdog import Rp2Watchdog  # type: ignore[import-not-found, unused-ignore]
except ImportError:  # MicroPython
    from watchdog import Rp2Watchdog  # type: ignore[import-not-found, no-redef, unused-ignore]

from machine import UART, Pin


class Rp2DongleBoard:
    def __init__(self, host_baud: int = 115200, radio_baud: int = 9600) -> None:
        self._host = UART(0, baudrate=host_baud, tx=Pin(0), rx=Pin(1), timeout=0)
        self._radio = UART(1, baudrate=radio_baud, tx=Pin(4), rx=Pin(5), timeout=0)
        self._one = bytearray(1)
        self._line = bytearray(80)
        self._n = 0
        self.closed = False
        self._watchdog = Rp2Watchdog()

    def ticks_ms(self) -> int:
        return int(time.ticks_ms())

    def ticks_diff(self, a: int, b: int) -> int:
        return int(time.ticks_diff(a, b))

    def wait(self, timeout_ms: int) -> None:
        deadline = time.ticks_add(time.ticks_ms(), timeout_ms)
        while not self._host.any() and not self._radio.any():
            if time.ticks_diff(deadline, time.ticks_ms()) <= 0:
                return
            time.sleep_ms(1)

    def read_byte(self) -> int:
        if not self._host.any() or not self._host.readinto(self._one, 1):
            return -1
        return self._one[0]

    def read_radio_line(self) -> "bytes | None":
        while self._radio.any():
            if not self._radio.readinto(self._one, 1):
                return None
            c = self._one[0]
            if c == 10:
                line = bytes(self._line[: self._n])
                self._n = 0
                return line
            if self._n < len(self._line):
                self._line[self._n] = c
                self._n += 1
        return None

    def write(self, buf: bytearray, n: int) -> None:
        self._host.write(memoryview(buf)[:n])

    def log(self, msg: str) -> None:
        print(msg)

    def wdt_start(self, timeout_ms: int) -> None:
        self._watchdog.start(timeout_ms)

    def wdt_feed(self) -> None:
        self._watchdog.feed()

    def path(self, name: str) -> str:
        return "/" + name  # littlefs on the board's flash

    def cut_point(self, n: int) -> None:
        pass  # the unix board cuts the power here in tests
