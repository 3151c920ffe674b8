"""The boards' watchdog, one copy for the lamp node and the wearable dongle.

``Rp2Watchdog``: the RP2040's hardware watchdog (machine.WDT): not fed within the timeout, the
chip resets. ``EmulatedWatchdog``: the same promise on the MicroPython unix port, a thread that
calls the board's ``expire`` (a power cut of the process, after the board records why) when
the main loop stops feeding it. Runs under MicroPython and CPython (type checks).
"""

import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable


class Rp2Watchdog:
    def __init__(self) -> None:
        self._wdt = None  # type: Any

    def start(self, timeout_ms: int) -> None:
        from machine import WDT  # type: ignore[import-not-found, unused-ignore]

        self._wdt = WDT(timeout=timeout_ms)

    def feed(self) -> None:
        if self._wdt is not None:
            self._wdt.feed()


class EmulatedWatchdog:
    def __init__(self, expire: "Callable[[], None]") -> None:
        self._expire = expire
        self._fed = 0
        self._timeout_ms = 0

    def start(self, timeout_ms: int) -> None:
        import _thread

        self._timeout_ms = timeout_ms
        self._fed = time.ticks_ms()
        _thread.start_new_thread(self._run, ())

    def feed(self) -> None:
        self._fed = time.ticks_ms()

    def _run(self) -> None:
        while time.ticks_diff(time.ticks_ms(), self._fed) < self._timeout_ms:
            time.sleep_ms(50)
        self._expire()
