"""Atomic, checksummed records on the board's flash filesystem (littlefs on the RP2040).

A save writes ``NAME.new`` (header, payload, CRC: separate writes) and flushes it (littlefs:
commits the file; unix port: fsync), then renames ``NAME.bin`` to ``NAME.bak`` (the previous
copy) and ``NAME.new`` to ``NAME.bin`` and syncs the directory (unix port: fsync of the
directory, so the save is on the disk when it returns; littlefs: nothing to do, a rename is a
commit). A load reads all three and takes the valid copy (magic, length and CRC-16 check) with
the highest generation, so a power cut at any step leaves the previous copy or the new one,
never a mixture; when none is valid the caller runs its documented safe default
(``source == "default"``). A load that took ``NAME.new`` (a cut before the renames) finishes
those renames at the next save, before that save truncates ``NAME.new``: else a cut during it
would fall back to an older copy (tests/hil/test_flash_cuts.py).

Record: b"FW" magic, generation u32, payload length u16, payload, CRC-16/MODBUS of all that.
``step`` is called before every filesystem operation: the unix board uses it to cut the power
at a chosen step (tests), the device passes a no-op. Allocates: not for the hot loop.
Must not import: board modules.
"""

import os

try:
    from edge_agent.codec.crc import crc16_modbus  # type: ignore[import-not-found, unused-ignore]
except ImportError:  # MicroPython
    from crc import crc16_modbus  # type: ignore[import-not-found, no-redef, unused-ignore]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable

_MAGIC0 = 0x46  # "F"
_MAGIC1 = 0x57  # "W"
_HDR = 8
STEPS = 7  # filesystem operations per save (power-cut tests cut before each one)


def _nostep(n: int) -> None:
    pass


class Store:
    def __init__(self, base: str, step: "Callable[[int], None] | None" = None) -> None:
        self.base = base
        self.step = step if step is not None else _nostep
        self.gen = 0
        self.source = "default"  # which copy the last load used: bin, new, bak or default
        self.saves = 0
        self.found = 0  # copies present at the last load (valid or not)

    def _read(self, path: str) -> "tuple[int, bytes] | None":
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            return None
        self.found += 1
        n = len(data)
        if n < _HDR + 2 or data[0] != _MAGIC0 or data[1] != _MAGIC1:
            return None
        length = (data[6] << 8) | data[7]
        if n != _HDR + length + 2:
            return None
        crc = crc16_modbus(data, 0, n - 2)
        if data[n - 2] != (crc & 0xFF) or data[n - 1] != (crc >> 8):
            return None
        gen = (data[2] << 24) | (data[3] << 16) | (data[4] << 8) | data[5]
        return gen, data[_HDR : n - 2]

    def load(self) -> "bytes | None":
        best = None  # type: tuple[int, bytes] | None
        self.source = "default"
        self.found = 0
        for ext in ("bin", "new", "bak"):
            r = self._read(self.base + "." + ext)
            if r is not None and (best is None or r[0] > best[0]):
                best = r
                self.source = ext
        if best is None:
            return None
        self.gen = best[0]
        return best[1]

    def _sync_dir(self) -> None:
        i = self.base.rfind("/")
        try:
            d = open(self.base[:i] if i > 0 else ".", "rb")
        except OSError:
            return  # littlefs cannot open a directory: its renames are already committed
        try:
            d.flush()  # unix port: fsync(2) of the directory (the renames reach the disk)
        finally:
            d.close()

    def _rotate(self) -> None:
        try:
            os.rename(self.base + ".bin", self.base + ".bak")
        except OSError:
            pass  # first save: no previous copy
        os.rename(self.base + ".new", self.base + ".bin")
        self._sync_dir()
        self.source = "bin"

    def save(self, payload: "bytes | bytearray") -> None:
        if self.source == "new":  # .new holds the current copy: rename it before truncating it
            self._rotate()
        gen = (self.gen + 1) & 0xFFFFFFFF
        n = len(payload)
        hdr = bytes([_MAGIC0, _MAGIC1, gen >> 24, (gen >> 16) & 0xFF, (gen >> 8) & 0xFF, gen & 0xFF,
                     n >> 8, n & 0xFF])
        crc = crc16_modbus(hdr + bytes(payload))
        new = self.base + ".new"
        step = self.step
        step(1)
        f = open(new, "wb")
        try:
            step(2)
            f.write(hdr)
            step(3)
            f.write(payload)
            step(4)
            f.write(bytes([crc & 0xFF, crc >> 8]))
            step(5)
            f.flush()  # littlefs: commit; unix port: fsync(2)
        finally:
            f.close()
        step(6)
        try:
            os.rename(self.base + ".bin", self.base + ".bak")
        except OSError:
            pass  # first save: no previous copy
        step(7)
        os.rename(new, self.base + ".bin")
        self._sync_dir()
        self.source = "bin"
        self.gen = gen
        self.saves += 1
