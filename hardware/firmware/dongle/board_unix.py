"""Dongle board for the unix port: the host link is stdin/stdout, the radio is a readable path
(a pipe such as /dev/fd/3) delivering one text line per packet. Must not import: machine.

The watchdog is emulated like the lamp node's (lamp_node/board_unix.py): a thread that kills
the process (kill -9) when not fed within the timeout; the harness's supervisor
(hardware/hil/procs.py) starts it again, like the RP2040 rebooting. The flash is a state
directory (``--state DIR``). Simulator commands on the radio pipe, besides packets and
``stats``: ``hang`` stops the main loop so the watchdog bites; ``power`` cuts the power now;
``cut N [SKIP]`` cuts it at point N of a later save (1-7: before filesystem step N of the
(SKIP+1)-th save from now, see common/store.py) and ``cut 0`` when the next ACK for the frame
in flight has arrived, before the dongle handles it (sender.CUT_ACK). A power cut is kill -9:
files are as the last completed write left them.
"""

import os
import select
import sys
import time

try:
    from hardware.firmware.common.watchdog import EmulatedWatchdog  # type: ignore[import-not-found, unused-ignore]
except ImportError:  # MicroPython
    from watchdog import EmulatedWatchdog  # type: ignore[import-not-found, no-redef, unused-ignore]


def _pid() -> int:
    with open("/proc/self/stat") as f:
        return int(f.read().split()[0])


class UnixDongleBoard:
    def __init__(self, radio_path: "str | None", state_dir: str = ".") -> None:
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
        self._watchdog = EmulatedWatchdog(self._watchdog_expired)
        self._dir = state_dir
        self._cut_at = -1
        self._cut_skip = 0
        self._pid = _pid()

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
                words = line.split()
                if words and words[0] in (b"hang", b"power", b"cut"):
                    self._command(words)
                    continue
                return line
            self._line.append(c)
        return None

    def write(self, buf: bytearray, n: int) -> None:
        self._out.write(memoryview(buf)[:n])
        self._out.flush()

    def log(self, msg: str) -> None:
        sys.stderr.write(msg + "\n")

    def _command(self, words: "list[bytes]") -> None:
        sys.stderr.write("ctl %s\n" % b" ".join(words).decode())
        if words[0] == b"hang":
            while True:  # a stuck main loop: nothing feeds the watchdog any more
                time.sleep_ms(100)
        elif words[0] == b"power":
            self.power_cut()
        else:
            self._cut_at = int(words[1])
            self._cut_skip = int(words[2]) if len(words) > 2 else 0

    def path(self, name: str) -> str:
        return self._dir + "/" + name

    def cut_point(self, n: int) -> None:
        if n == self._cut_at and self._cut_skip == 0:
            sys.stderr.write("power cut at point %d\n" % n)
            self.power_cut()
        if n == 7 and self._cut_skip > 0:  # the last step of a save (common/store.py STEPS)
            self._cut_skip -= 1

    def power_cut(self) -> None:
        os.system("kill -9 %d" % self._pid)
        while True:
            time.sleep_ms(100)

    def wdt_start(self, timeout_ms: int) -> None:
        self._watchdog.start(timeout_ms)

    def wdt_feed(self) -> None:
        self._watchdog.feed()

    def _watchdog_expired(self) -> None:
        sys.stderr.write("watchdog reset\n")
        self.power_cut()
