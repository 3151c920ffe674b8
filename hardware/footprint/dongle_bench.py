# ruff: noqa: UP031  (%-formatting: this file runs under MicroPython)
# Footprint of the dongle's main loop under the MicroPython unix port, driven by
# hardware/footprint/__main__.py (MICROPYPATH = compiled dongle:common:codec). argv: STATE_DIR
# PACKETS. The real app.run loop with an in-memory board: one radio packet per loop turn
# (heartbeats, every 10th an SOS, saved on flash), each frame ACKed by an emulated gateway.
# The peak is of live data (collected before each frame is written), not of garbage.
import gc

gc.collect()
_base = gc.mem_alloc()

import sys  # noqa: E402

import app  # noqa: E402
import frames  # noqa: E402

STATE = sys.argv[1]
PACKETS = int(sys.argv[2])


class BenchDongle:
    def __init__(self):
        self.closed = False
        self.t = 0
        self.n = 0
        self.dec = frames.Decoder()
        self.rx = b""
        self.i = 0
        self.peak = 0
        self.frames = 0
        self.after_boot = 0
        self.turn = False  # one radio packet per loop turn

    def ticks_ms(self):
        return self.t

    def ticks_diff(self, a, b):
        return a - b

    def wait(self, timeout_ms):
        self.t += 5
        self.turn = True

    def read_byte(self):
        if self.i >= len(self.rx):
            return -1
        c = self.rx[self.i]
        self.i += 1
        return c

    def read_radio_line(self):
        if self.n >= PACKETS:
            self.closed = True
            return None
        if self.i < len(self.rx) or not self.turn:
            return None
        self.turn = False
        self.n += 1
        return b"sos 7 80" if self.n % 10 == 0 else b"hb 7 80 -60"

    def write(self, buf, n):
        gc.collect()  # live data only: what the heap must hold while a frame goes out
        m = gc.mem_alloc()
        if m > self.peak:
            self.peak = m
        for k in range(n):
            r = self.dec.feed_byte(buf[k])
            if r is not None and not isinstance(r, str):
                self.frames += 1
                self.rx = frames.encode(frames.ACK, r.seq, r.device_id)
                self.i = 0

    def log(self, msg):
        pass

    def wdt_start(self, timeout_ms):
        gc.collect()
        self.after_boot = gc.mem_alloc()

    def wdt_feed(self):
        pass

    def path(self, name):
        return STATE + "/" + name

    def cut_point(self, n):
        pass


board = BenchDongle()
sender = app.run(board, 50, 0x12345678)
gc.collect()
print("heap_after_boot %d" % (board.after_boot - _base))
print("live_after_run %d" % (gc.mem_alloc() - _base))
print("peak_heap %d" % (board.peak - _base))
print("frames %d" % board.frames)
print("saves %d" % sender.saves)
