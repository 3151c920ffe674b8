# ruff: noqa: UP031  (%-formatting: this file runs under MicroPython)
# Footprint of the lamp node's main loop under the MicroPython unix port, driven by
# hardware/footprint/__main__.py (MICROPYPATH = lamp_node:common:codec). argv: STATE_DIR POLLS.
# The real app.run loop with an in-memory board: one routine poll (FC 04, 15 registers) per
# loop turn; prints "key value" lines.
import gc
import sys

gc.collect()
_base = gc.mem_alloc()

import app  # noqa: E402
import simsensor  # noqa: E402
from crc import crc16_modbus  # noqa: E402

STATE = sys.argv[1]
POLLS = int(sys.argv[2])
WARMUP = 200


class Pwm:
    def __init__(self):
        self.level = -1

    def set_level(self, level):
        self.level = level


class BenchBoard:
    def __init__(self):
        self.pwm = Pwm()
        self.sensor = simsensor.SimSensor(self.pwm)
        self.closed = False
        req = bytearray([1, 4, 0, 0, 0, 15, 0, 0])
        c = crc16_modbus(req, 0, 6)
        req[6] = c & 0xFF
        req[7] = c >> 8
        self.req = req
        self.i = 8  # bytes of the current request already read
        self.t = 0
        self.replies = 0
        self.peak = 0
        self.reply_bytes = 0
        self.mark = 0
        self.alloc = 0
        self.after_boot = 0

    def ticks_ms(self):
        return self.t

    def ticks_diff(self, a, b):
        return a - b

    def wait_rx(self, timeout_ms):
        self.t += 10
        if self.replies >= POLLS:
            self.closed = True
            return False
        self.i = 0
        return True

    def read_byte(self):
        if self.i >= 8:
            return -1
        c = self.req[self.i]
        self.i += 1
        return c

    def write(self, buf, n):
        self.replies += 1
        self.reply_bytes = n
        m = gc.mem_alloc()
        if m > self.peak:
            self.peak = m
        if self.replies == WARMUP:
            gc.collect()
            gc.disable()
            self.mark = gc.mem_alloc()
        elif self.replies == POLLS:
            self.alloc = gc.mem_alloc() - self.mark
            gc.enable()

    def path(self, name):
        return STATE + "/" + name

    def fs_step(self, n):
        pass

    def rtc_read(self):
        return 835000000  # 2026-06-17 local: a valid RTC, the program runs from boot

    def rtc_write(self, seconds, rate):
        pass

    def reset_cause(self):
        return 0

    def wdt_start(self, timeout_ms):
        gc.collect()  # app.run calls this once, after booting from flash
        self.after_boot = gc.mem_alloc()

    def wdt_feed(self):
        pass


board = BenchBoard()
lamp = app.run(board, 1)
gc.collect()
print("heap_after_boot %d" % (board.after_boot - _base))
print("live_after_run %d" % (gc.mem_alloc() - _base))
print("peak_heap %d" % (board.peak - _base))
print("polls %d" % (POLLS - WARMUP))
print("alloc_bytes %d" % board.alloc)
print("reply_bytes %d" % board.reply_bytes)
print("fallback %d level %d" % (lamp.fallback, lamp.ir[10]))
