"""Board layer for the MicroPython unix port (the HIL harness): the UART is stdin/stdout (or a
raw tty path), the PWM logs each level change to stderr, the lamp sensor is simulated
(simsensor), the flash is a state directory, and the board emulates what the RP2040 has:

- watchdog: a thread that kills the process (kill -9) when not fed within the timeout, after
  leaving ``reset_cause`` = wdt in the state directory (the RP2040's reset reason register);
- RTC: ``--rtc`` gives a battery-backed RTC (file ``rtc``: seconds, host time, rate), which
  keeps counting while the process is down; without it the node has none;
- a control pipe (``--ctl PATH``), one command a line: ``fault ok|open|short|driver``,
  ``hang`` (the main loop stops: the watchdog must bite), ``cut N`` (power cut before
  filesystem step N of the next save, see common/store.py), ``power`` (power cut now).

A power cut is kill -9 of this process: files are as the last completed write left them. The
harness restarts the process (hardware/hil/procs.py: a supervisor loop), like power returning.
Must not import: machine (the unix port has no UART/PWM), application modules.
"""

import os
import select
import sys
import time

try:
    from hardware.firmware.common.watchdog import EmulatedWatchdog  # type: ignore[import-not-found, unused-ignore]
except ImportError:  # MicroPython
    from watchdog import EmulatedWatchdog  # type: ignore[import-not-found, no-redef, unused-ignore]

try:
    import simsensor  # type: ignore[import-not-found, unused-ignore]
except ImportError:
    from hardware.firmware.lamp_node import simsensor  # type: ignore[import-not-found, no-redef, unused-ignore]


class LogPwm:
    """A PWM output that records and logs the level instead of driving a pin."""

    def __init__(self) -> None:
        self.level = -1

    def set_level(self, level: int) -> None:
        self.level = level
        sys.stderr.write("pwm level=%d duty_u16=%d\n" % (level, level * 65535 // 100))


def _pid() -> int:
    with open("/proc/self/stat") as f:
        return int(f.read().split()[0])


class UnixBoard:
    """Byte I/O on file descriptors with poll; ``closed`` turns true at end of input."""

    def __init__(self, path: "str | None" = None, state_dir: str = ".", ctl: "str | None" = None,
                 rtc: bool = False) -> None:
        if path:
            self._in = open(path, "rb")
            self._out = open(path, "wb")
        else:
            self._in = sys.stdin.buffer
            self._out = sys.stdout.buffer
        self._ctl = open(ctl, "rb") if ctl else None
        self._poll = select.poll()  # UART and control pipe: see _ready
        self._poll.register(self._in, select.POLLIN)
        if self._ctl is not None:
            self._poll.register(self._ctl, select.POLLIN)
        self._one = bytearray(1)
        self.pwm = LogPwm()
        self.sensor = simsensor.SimSensor(self.pwm)
        self.closed = False
        self._dir = state_dir
        self._rtc = rtc
        self._cut_at = 0
        self._watchdog = EmulatedWatchdog(self._watchdog_expired)
        self._pid = _pid()
        self._cause = 0
        try:
            with open(self.path("reset_cause")) as f:
                self._cause = 1 if f.read().strip() == "wdt" else 0
            os.remove(self.path("reset_cause"))
        except OSError:
            pass

    def ticks_ms(self) -> int:
        return int(time.ticks_ms())

    def ticks_diff(self, a: int, b: int) -> int:
        return int(time.ticks_diff(a, b))

    def _ready(self, timeout_ms: int) -> bool:
        """Whether the UART has a byte (or its end); a pending control line is handled first.
        Every UART byte is read after such a poll, so a command written before a request's
        bytes were sent applies to that request (a ``cut N`` to the save it makes), even when
        the bytes arrive while the main loop is still reading the previous frame."""
        rx = False
        ctl = False
        for obj, _ev in self._poll.ipoll(timeout_ms):
            if obj is self._in:
                rx = True
            else:
                ctl = True
        if ctl:
            self._command()
        return rx

    def wait_rx(self, timeout_ms: int) -> bool:
        return self._ready(timeout_ms)

    def read_byte(self) -> int:
        if not self._ready(0):
            return -1
        n = self._in.readinto(self._one, 1)
        if not n:
            self.closed = True
            return -1
        return self._one[0]

    def write(self, buf: bytearray, n: int) -> None:
        self._out.write(memoryview(buf)[:n])
        self._out.flush()

    # --- flash, RTC, reset, watchdog --------------------------------------------------------
    def path(self, name: str) -> str:
        return self._dir + "/" + name

    def fs_step(self, n: int) -> None:
        if self._cut_at == n:
            sys.stderr.write("power cut at save step %d\n" % n)
            self.power_cut()

    def power_cut(self) -> None:
        os.system("kill -9 %d" % self._pid)
        while True:
            time.sleep_ms(100)

    def rtc_read(self) -> int:
        if not self._rtc:
            return -1
        try:
            with open(self.path("rtc")) as f:
                base, host, rate = f.read().split()
        except (OSError, ValueError):
            return -1  # never set: no valid time
        return int(base) + int((time.time() - float(host)) * int(rate))

    def rtc_write(self, seconds: int, rate: int) -> None:
        if self._rtc:
            with open(self.path("rtc"), "w") as f:
                f.write("%d %f %d" % (seconds, time.time(), rate))

    def reset_cause(self) -> int:
        return self._cause

    def wdt_start(self, timeout_ms: int) -> None:
        self._watchdog.start(timeout_ms)

    def wdt_feed(self) -> None:
        self._watchdog.feed()

    def _watchdog_expired(self) -> None:
        with open(self.path("reset_cause"), "w") as f:
            f.write("wdt")
        sys.stderr.write("watchdog reset\n")
        self.power_cut()

    def _command(self) -> None:
        ctl = self._ctl
        if ctl is None:
            return
        line = ctl.readline()
        if not line:
            self._poll.unregister(ctl)
            self._ctl = None
            return
        words = line.split()
        sys.stderr.write("ctl %s\n" % line.strip().decode())
        if words[0] == b"fault":
            self.sensor.fault = simsensor.NAMES.index(words[1].decode())
        elif words[0] == b"hang":
            while True:  # a stuck main loop: nothing feeds the watchdog any more
                time.sleep_ms(100)
        elif words[0] == b"cut":
            self._cut_at = int(words[1])
        elif words[0] == b"power":
            self.power_cut()
