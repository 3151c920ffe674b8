"""Dongle board for the unix port: the host link is stdin/stdout, the radio is a readable path
(a pipe such as /dev/fd/3) delivering one text line per packet. Must not import: machine.

The watchdog is emulated like the lamp node's (lamp_node/board_unix.py): a thread that kills
the process (kill -9) when not fed within the timeout; the harness's supervisor
(hardware/hil/procs.py) starts it again, like the RP2040 rebooting. A ``hang`` line on the
radio pipe (a simulator command, like ``stats``) stops the main loop so the watchdog bites.
"""

import os
import select
import sys
import time


def _pid() -> int:
    with open("/proc/self/stat") as f:
        return int(f.read().split()[0])


class UnixDongleBoard:
    def __init__(self, radio_path: "str | None") -> None:
        self._in = sys.stdin.buffer
        self._out = sys.stdout.buffer
        self._one = bytearray(1)
        self._poll = select.poll()
        self._poll.register(self._in, select.POLLIN)
        self._rpoll = select.poll()
        self._radio = open(radio_path, "rb") if radio_path else None
        if self._radio is not None:
            self._rpoll.register(self._radio, select.POLLIN)
            self._poll.register(self._radio, select.POLLIN)
        self._line = bytearray()
        self.closed = False
        self._fed = 0
        self._wdt_ms = 0

    def ticks_ms(self) -> int:
        return int(time.ticks_ms())

    def ticks_diff(self, a: int, b: int) -> int:
        return int(time.ticks_diff(a, b))

    def wait(self, timeout_ms: int) -> None:
        self._poll.poll(timeout_ms)

    def read_byte(self) -> int:
        for _fd, ev in self._poll.poll(0):
            if _fd is self._in:
                break
        else:
            return -1
        n = self._in.readinto(self._one, 1)
        if not n:
            self.closed = True
            return -1
        return self._one[0]

    def read_radio_line(self) -> "bytes | None":
        radio = self._radio
        if radio is None:
            return None
        while self._rpoll.poll(0):
            n = radio.readinto(self._one, 1)
            if not n:
                self._rpoll.unregister(radio)
                self._poll.unregister(radio)
                self._radio = None
                return None
            c = self._one[0]
            if c == 10:
                line = bytes(self._line)
                self._line = bytearray()
                if line.strip() == b"hang":
                    sys.stderr.write("hang\n")
                    while True:  # a stuck main loop: nothing feeds the watchdog any more
                        time.sleep_ms(100)
                return line
            self._line.append(c)
        return None

    def write(self, buf: bytearray, n: int) -> None:
        self._out.write(memoryview(buf)[:n])
        self._out.flush()

    def log(self, msg: str) -> None:
        sys.stderr.write(msg + "\n")

    def wdt_start(self, timeout_ms: int) -> None:
        import _thread

        self._wdt_ms = timeout_ms
        self._fed = time.ticks_ms()
        _thread.start_new_thread(self._watchdog, ())

    def wdt_feed(self) -> None:
        self._fed = time.ticks_ms()

    def _watchdog(self) -> None:
        while time.ticks_diff(time.ticks_ms(), self._fed) < self._wdt_ms:
            time.sleep_ms(50)
        sys.stderr.write("watchdog reset\n")
        os.system("kill -9 %d" % _pid())
        while True:
            time.sleep_ms(100)
