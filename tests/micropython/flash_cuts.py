# Run by tests/hil/test_flash_cuts.py under the MicroPython unix port, MICROPYPATH = the lamp
# node's or the dongle's firmware dir : firmware/common : edge_agent/codec.
# argv: `saver|boot KIND DIR` (see saver()) or JOBS, JSON lines: {"kind": "lamp"|"dongle",
# "dir": SCRATCH}, then one job a line: {"files": {NAME: HEX}, "save": SPEC|null}. Per job:
# SCRATCH is emptied and filled with the files, the firmware's loader boots from it (lamp:
# app.boot; dongle: Store + Sender, as app.run does), and with a SPEC the record it describes
# is saved by common/store.py through a shim of the `open` and
# `os.rename` the store calls, which records every file-system operation (create, write with
# its bytes, flush = fsync, directory fsync, rename) and performs it. Prints one JSON line a
# job: {"loaded": what the loader booted into, "trace": [[op, name, hex], ...]}.
# SPEC: lamp [version, [[minute, level], ...]]; dongle {"flight": [kind, dev, hex, seq, nonce]
# or null, "queue": [[kind, dev, hex], ...]}. Loaded: lamp [version, [[minute, level], ...]] or
# null (no stored program restored); dongle the same shape as SPEC (alarms only) or null (no
# valid record).
import binascii
import json
import os
import sys

import store as store_mod
from store import Store

SOS, FALL = 1, 2
REAL_OPEN = open
REAL_OS = os


def hx(b):
    return binascii.hexlify(b).decode()


def unhx(s):
    return binascii.unhexlify(s)


class Trace:
    def __init__(self, scratch):
        self.scratch = scratch
        self.ops = []

    def name(self, path):
        return path[len(self.scratch) + 1 :] if path.startswith(self.scratch + "/") else ""

    def open(self, path, mode="r"):
        f = REAL_OPEN(path, mode)
        if "w" in mode:
            self.ops.append(["create", self.name(path), ""])
        return TracedFile(self, self.name(path), f)

    def rename(self, a, b):
        REAL_OS.rename(a, b)  # an OSError (no such file) is not an operation on the disk
        self.ops.append(["rename", self.name(a), self.name(b)])


class TracedFile:
    def __init__(self, trace, name, f):
        self.trace = trace
        self.nm = name
        self.f = f

    def write(self, b):
        self.trace.ops.append(["write", self.nm, hx(bytes(b))])
        return self.f.write(b)

    def flush(self):
        self.f.flush()
        self.trace.ops.append(["fsync", self.nm, ""] if self.nm else ["dsync", "", ""])

    def read(self, *a):
        return self.f.read(*a)

    def close(self):
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.f.close()


class Pwm:
    level = -1

    def set_level(self, level):
        self.level = level


class Board:
    def __init__(self, scratch, kind):
        if kind == "lamp":
            import simsensor

            self.pwm = Pwm()
            self.sensor = simsensor.SimSensor(self.pwm)
        self.scratch = scratch

    def path(self, name):
        return self.scratch + "/" + name

    def fs_step(self, n):
        pass

    def cut_point(self, n):
        pass

    def rtc_read(self):
        return -1

    def reset_cause(self):
        return 0

    def ticks_ms(self):
        return 0

    def log(self, msg):
        pass


def lamp_program(lamp):
    import regs

    hr = lamp.hr
    n = hr[regs.HR_PROGRAM_COUNT]
    steps = [[hr[regs.HR_PROGRAM_BASE + 2 * i], hr[regs.HR_PROGRAM_BASE + 2 * i + 1]] for i in range(n)]
    return [hr[regs.HR_PROGRAM_VERSION], steps]


def lamp_boot(board):
    import app

    lamp, store = app.boot(board, 1)
    return (lamp_program(lamp) if store.source != "default" else None), store, lamp


def lamp_record(lamp, spec):
    import regs
    from lamp import STATE_WORDS

    hr = lamp.hr
    hr[regs.HR_PROGRAM_VERSION] = spec[0]
    for i in range(len(spec[1])):
        hr[regs.HR_PROGRAM_BASE + 2 * i] = spec[1][i][0]
        hr[regs.HR_PROGRAM_BASE + 2 * i + 1] = spec[1][i][1]
    hr[regs.HR_PROGRAM_COUNT] = len(spec[1])
    buf = bytearray(2 * STATE_WORDS)
    lamp.to_state(buf)
    return buf


def alarms(sender):
    flight = None
    if sender.in_flight:
        k, d, p = sender.flight
        flight = [k, d, hx(p), sender.fseq, sender.fnonce]
    return {"flight": flight, "queue": [[k, d, hx(p)] for k, d, p in sender.queue if k in (SOS, FALL)]}


def dongle_boot(board):
    from sender import Sender

    store = Store(board.path("queue"), board.cut_point)
    sender = Sender(board, 50, 0x0B00, store)
    return (alarms(sender) if store.source != "default" else None), store, sender


def dongle_record(sender, spec):
    f = spec["flight"]
    sender.in_flight = f is not None
    if f is not None:
        sender.flight = (f[0], f[1], unhx(f[2]))
        sender.fseq = f[3]
        sender.fnonce = f[4]
    sender.queue = [(k, d, unhx(p)) for k, d, p in spec["queue"]]
    return sender.record()


def run_job(kind, scratch, job):
    for name in os.listdir(scratch):
        os.remove(scratch + "/" + name)
    for name, data in job["files"].items():
        with REAL_OPEN(scratch + "/" + name, "wb") as f:
            f.write(unhx(data))
    board = Board(scratch, kind)
    loaded, store, obj = lamp_boot(board) if kind == "lamp" else dongle_boot(board)
    out = {"loaded": loaded, "trace": None}
    spec = job.get("save")
    if spec is not None:
        record = lamp_record(obj, spec) if kind == "lamp" else dongle_record(obj, spec)
        trace = Trace(scratch)
        store_mod.open = trace.open
        store_mod.os = trace
        try:
            store.save(record)
        finally:
            store_mod.open = REAL_OPEN
            store_mod.os = REAL_OS
        out["trace"] = trace.ops
    return out


def spec_n(kind, i):
    """The i-th record of the saver (lamp: program version i; dongle: an SOS from device i)."""
    if kind == "lamp":
        return [i, [[i % 1440, i % 101]]]
    return {"flight": [SOS, i, "", i & 0xFFFF, 1], "queue": []}


def saver(kind, path):
    """Boot from PATH, print what was booted, then save records spec_n(i), i = 1, 2, ... after
    the booted one, printing "saved i" when each save has returned, until killed."""
    board = Board(path, kind)
    loaded, store, obj = lamp_boot(board) if kind == "lamp" else dongle_boot(board)
    sys.stdout.write(json.dumps({"loaded": loaded}) + "\n")
    if sys.argv[1] == "boot":
        return
    i = 0
    if loaded is not None:
        i = loaded[0] if kind == "lamp" else loaded["flight"][1]
    while True:
        i += 1
        spec = spec_n(kind, i)
        store.save(lamp_record(obj, spec) if kind == "lamp" else dongle_record(obj, spec))
        sys.stdout.write("saved " + str(i) + "\n")


def main():
    if sys.argv[1] in ("saver", "boot"):
        saver(sys.argv[2], sys.argv[3])
        return
    with REAL_OPEN(sys.argv[1]) as f:
        req = json.loads(f.readline())
        for line in f:
            sys.stdout.write(json.dumps(run_job(req["kind"], req["dir"], json.loads(line))) + "\n")


main()
