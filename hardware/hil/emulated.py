"""Lamp nodes emulated in-process: the firmware's own ``Lamp`` and ``RtuSlave`` classes run
under CPython behind a ``PtyBus`` (same code as on the device, a CPython clock and PWM).

Used by the non-HIL tests and the polling benchmark. ``mute`` makes a node stop answering
(pulled off the bus); ``reply_override`` replaces its next replies (bad-input tests).
Must not import: edge_agent beyond the codec (through the firmware modules).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from hardware.firmware.lamp_node.lamp import Lamp
from hardware.firmware.lamp_node.rtu import RtuSlave
from hardware.firmware.lamp_node.simsensor import SimSensor


class RecordingPwm:
    def __init__(self) -> None:
        self.levels: list[int] = []
        self.level = -1

    def set_level(self, level: int) -> None:
        self.levels.append(level)
        self.level = level


class EmulatedLampNode:
    """One lamp node; ``feed`` takes line bytes and returns its reply bytes (or b"")."""

    def __init__(self, unit: int) -> None:
        self.unit = unit
        self.pwm = RecordingPwm()
        self.sensor = SimSensor(self.pwm)  # the unix board's simulated lamp (faults injectable)
        self.lamp = Lamp(self.pwm, self.sensor)
        self.slave = RtuSlave(unit, self.lamp)
        self.mute = False
        self.reply_override: Callable[[bytes], bytes] | None = None
        self._last = time.monotonic()

    def feed(self, data: bytes) -> bytes:
        now = time.monotonic()
        self.lamp.tick(int((now - self._last) * 1000))
        self._last = now
        out = b""
        for b in data:
            n = self.slave.feed(b)
            if n:
                out += bytes(self.slave.tx[:n])
        if self.mute:
            return b""
        if out and self.reply_override is not None:
            return self.reply_override(out)
        return out
