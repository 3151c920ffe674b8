"""Modbus RTU slave framing and PDU handling for one unit address (FC 03, 04, 06, 16).

Owns: reassembling request frames from a byte stream (resynchronising by sliding one byte on a
bad CRC, so garbage and other slaves' replies on the shared line are skipped), register reads
and writes against a ``Lamp``, exception replies, broadcast writes (unit 0, no reply).
Preallocated rx/tx buffers; ``feed`` allocates nothing. Must not import: board modules.
"""

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fwtypes import LampModel

try:
    from edge_agent.codec.crc import crc16_modbus  # type: ignore[import-not-found, unused-ignore]
except ImportError:  # MicroPython
    from crc import crc16_modbus  # type: ignore[import-not-found, no-redef, unused-ignore]

try:
    from hardware.firmware.lamp_node import regs  # type: ignore[import-not-found, unused-ignore]
except ImportError:  # MicroPython
    import regs  # type: ignore[import-not-found, no-redef, unused-ignore]

_BUF = 256


class RtuSlave:
    """Feed it bytes; when a request for us completes it returns the reply length in ``tx``."""

    def __init__(self, unit: int, lamp: "LampModel") -> None:
        self.unit = unit
        self.lamp = lamp
        self.rx = bytearray(_BUF)
        self.tx = bytearray(_BUF)
        self._s = 0
        self._n = 0
        self.requests = 0  # valid requests addressed to us
        self.skipped = 0  # bytes skipped while resynchronising

    def pending(self) -> bool:
        return self._n > self._s

    def reset(self) -> None:
        """Drop a partial frame (call after an inter-frame silence)."""
        self._s = 0
        self._n = 0

    def feed(self, b: int) -> int:
        if self._n >= _BUF:
            # compact: keep the unconsumed tail at the start (rare: only under garbage floods)
            rx = self.rx
            k = self._n - self._s
            for i in range(k):
                rx[i] = rx[self._s + i]
            self._s = 0
            self._n = k
            if k >= _BUF:
                self.reset()
        self.rx[self._n] = b
        self._n += 1
        return self._try()

    def _try(self) -> int:
        rx = self.rx
        while True:
            s = self._s
            avail = self._n - s
            if avail < 2:
                return 0
            fc = rx[s + 1]
            if fc <= 6 and fc >= 1:
                need = 8
            elif fc == 16 or fc == 15:
                if avail < 7:
                    return 0
                count = (rx[s + 4] << 8) | rx[s + 5]
                need = 9 + rx[s + 6]
                if fc == 16 and (count == 0 or count > 123 or rx[s + 6] != 2 * count):
                    need = -1
            else:
                need = -1
            if need > 0 and avail < need:
                return 0
            if need > 0:
                end = s + need
                crc = crc16_modbus(rx, s, end - 2)
                if rx[end - 2] == (crc & 0xFF) and rx[end - 1] == (crc >> 8):
                    self._s = end
                    if end == self._n:
                        self.reset()
                    return self._handle(s, need)
            self._s = s + 1  # not a frame here: slide one byte
            self.skipped += 1

    def _handle(self, s: int, length: int) -> int:
        rx = self.rx
        addr = rx[s]
        if addr != self.unit and addr != 0:
            return 0
        lamp = self.lamp
        if addr == self.unit:
            self.requests += 1
            lamp.master_seen()
        fc = rx[s + 1]
        start = (rx[s + 2] << 8) | rx[s + 3]
        qty = (rx[s + 4] << 8) | rx[s + 5]
        if fc == 3 or fc == 4:
            if addr == 0:
                return 0
            table = lamp.hr if fc == 3 else lamp.ir
            if qty == 0 or qty > 125:
                return self._exception(fc, regs.EXC_ILLEGAL_VALUE)
            if start + qty > len(table):
                return self._exception(fc, regs.EXC_ILLEGAL_ADDRESS)
            tx = self.tx
            tx[0] = self.unit
            tx[1] = fc
            tx[2] = 2 * qty
            w = 3
            for i in range(qty):
                v = table[start + i]
                tx[w] = (v >> 8) & 0xFF
                tx[w + 1] = v & 0xFF
                w += 2
            return self._finish(w)
        if fc == 6:
            if start >= regs.HR_COUNT:
                return self._exception(fc, regs.EXC_ILLEGAL_ADDRESS)
            if not lamp.valid_write(start, qty):
                return self._exception(fc, regs.EXC_ILLEGAL_VALUE)
            lamp.write(start, qty)
            if addr == 0:
                return 0
            tx = self.tx
            for i in range(6):
                tx[i] = rx[s + i]
            tx[0] = self.unit
            return self._finish(6)
        if fc == 16:
            if start + qty > regs.HR_COUNT:
                return self._exception(fc, regs.EXC_ILLEGAL_ADDRESS)
            for i in range(qty):
                v = (rx[s + 7 + 2 * i] << 8) | rx[s + 8 + 2 * i]
                if not lamp.valid_write(start + i, v):
                    return self._exception(fc, regs.EXC_ILLEGAL_VALUE)
            for i in range(qty):
                v = (rx[s + 7 + 2 * i] << 8) | rx[s + 8 + 2 * i]
                lamp.write(start + i, v)
            if addr == 0:
                return 0
            tx = self.tx
            for i in range(6):
                tx[i] = rx[s + i]
            tx[0] = self.unit
            return self._finish(6)
        if addr == 0:
            return 0
        return self._exception(fc, regs.EXC_ILLEGAL_FUNCTION)

    def _exception(self, fc: int, code: int) -> int:
        tx = self.tx
        tx[0] = self.unit
        tx[1] = fc | 0x80
        tx[2] = code
        return self._finish(3)

    def _finish(self, w: int) -> int:
        tx = self.tx
        crc = crc16_modbus(tx, 0, w)
        tx[w] = crc & 0xFF
        tx[w + 1] = crc >> 8
        return w + 2
