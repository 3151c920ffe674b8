"""Board layer for the MicroPython unix port: the UART is stdin/stdout (or a raw tty path),
the PWM logs each level change to stderr. Used by the HIL harness.

Must not import: machine (the unix port has no UART/PWM), application modules.
"""

import select
import sys
import time


class LogPwm:
    """A PWM output that records and logs the level instead of driving a pin."""

    def __init__(self) -> None:
        self.level = -1

    def set_level(self, level: int) -> None:
        self.level = level
        sys.stderr.write("pwm level=%d duty_u16=%d\n" % (level, level * 65535 // 100))


class UnixBoard:
    """Byte I/O on file descriptors with poll; ``closed`` turns true at end of input."""

    def __init__(self, path: "str | None" = None) -> None:
        if path:
            self._in = open(path, "rb")
            self._out = open(path, "wb")
        else:
            self._in = sys.stdin.buffer
            self._out = sys.stdout.buffer
        self._poll = select.poll()
        self._poll.register(self._in, select.POLLIN)
        self._one = bytearray(1)
        self.pwm = LogPwm()
        self.closed = False

    def ticks_ms(self) -> int:
        return int(time.ticks_ms())

    def ticks_diff(self, a: int, b: int) -> int:
        return int(time.ticks_diff(a, b))

    def wait_rx(self, timeout_ms: int) -> bool:
        return bool(self._poll.poll(timeout_ms))

    def read_byte(self) -> int:
        if not self._poll.poll(0):
            return -1
        n = self._in.readinto(self._one, 1)
        if not n:
            self.closed = True
            return -1
        return self._one[0]

    def write(self, buf: bytearray, n: int) -> None:
        self._out.write(memoryview(buf)[:n])
        self._out.flush()
