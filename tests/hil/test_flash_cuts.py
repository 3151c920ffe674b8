"""The lamp node's and the dongle's flash store (hardware/firmware/common/store.py) under the
MicroPython unix port, cut at every file-system operation and every byte boundary of a save.

How: tests/micropython/flash_cuts.py runs the firmware's loader (the lamp's ``app.boot``, the
dongle's Store + Sender) and its ``Store.save`` under the real ``micropython``, through a shim
of the ``open``/``os.rename`` the store calls that records each operation (create, write and
its bytes, fsync, directory fsync, rename). This test replays every prefix of that sequence,
the next write torn at every byte, into a fresh state directory (the disk after a cut, when the
operations reach it in order, as littlefs's copy-on-write commits do), boots the loader on
each, and asserts it finds the record it booted with before the save or the new one: never a
default, never a third. Then it cuts a second save started from every state the first cut can
leave (a cut after a cut). The answers are the programs and alarms this test saved, not the
firmware's output. What a POSIX disk adds (unsynced data and entries lost, reordered) is
proven end to end on the power-cut FUSE file system in test_flash_powercut.py.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hardware.hil.procs import DONGLE_DIR, LAMP_DIR, micropython_binary, micropython_path

pytestmark = [pytest.mark.hil, pytest.mark.micropython, pytest.mark.timeout(120)]

SCRIPT = Path(__file__).resolve().parents[1] / "micropython" / "flash_cuts.py"
Files = dict[str, bytes]

PROGRAMS = [
    [3, [[1080, 100], [1380, 50], [300, 0]]],
    [4, [[1100, 80], [1320, 40], [330, 0]]],
    [5, [[1090, 100], [1400, 30], [310, 20], [360, 0]]],
    [6, [[1000, 60]]],
]
SOS, FALL = 1, 2
ALARMS: list[dict[str, Any]] = [
    {"flight": [SOS, 0x1001, "0a0b", 7, 0xA1], "queue": []},
    {"flight": [SOS, 0x1001, "0a0b", 7, 0xA1], "queue": [[FALL, 0x1002, "0c"]]},
    {"flight": [FALL, 0x1002, "0c", 8, 0xA1], "queue": [[SOS, 0x1003, "0d0e0f"], [SOS, 0x1004, ""]]},
    {"flight": [SOS, 0x1003, "0d0e0f", 9, 0xA1], "queue": [[SOS, 0x1004, ""]]},
]


def run_jobs(kind: str, scratch: Path, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    exe = micropython_binary()
    if exe is None:
        pytest.skip("micropython unix port not installed")
    scratch.mkdir(exist_ok=True)
    req = scratch.parent / f"{kind}-jobs.json"
    lines = [{"kind": kind, "dir": str(scratch)}, *jobs]
    req.write_text("".join(json.dumps(x) + "\n" for x in lines))
    env = dict(os.environ, MICROPYPATH=micropython_path(LAMP_DIR if kind == "lamp" else DONGLE_DIR))
    out = subprocess.run([exe, str(SCRIPT), str(req)], capture_output=True, text=True, env=env, timeout=90)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def job(files: Files, save: object = None) -> dict[str, Any]:
    return {"files": {k: v.hex() for k, v in files.items()}, "save": save}


def cut_states(start: Files, trace: list[list[str]]) -> Iterator[tuple[str, Files]]:
    """The disk after a cut at every operation of ``trace`` and every byte of each write, the
    operations reaching the disk in order (the model: independent of the store's code)."""
    files = dict(start)
    yield "before op 0", dict(files)
    for i, (op, name, arg) in enumerate(trace):
        if op == "write":
            data = bytes.fromhex(arg)
            for k in range(1, len(data)):
                torn = dict(files)
                torn[name] = files[name] + data[:k]
                yield f"op {i} write torn after byte {k}/{len(data)}", torn
            files[name] = files[name] + data
        elif op == "create":
            files[name] = b""
        elif op == "rename":
            files[arg] = files.pop(name)
        else:
            assert op in ("fsync", "dsync"), op
        yield f"after op {i} {op} {name}", dict(files)


def check_cuts(kind: str, tmp_path: Path, specs: list[Any]) -> int:
    """Save specs[0..] in turn; cut save k+1 everywhere, then a further save from each cut state
    everywhere. Returns the number of cut states booted."""
    scratch = tmp_path / "flash"
    files: Files = {}
    for spec in specs[:2]:  # two complete saves: a current copy and a previous one on flash
        (r,) = run_jobs(kind, scratch, [job(files, spec)])
        _, files = list(cut_states(files, r["trace"]))[-1]
    (r,) = run_jobs(kind, scratch, [job(files, specs[2])])
    assert r["loaded"] == specs[1], "the loader does not boot the last saved record"
    first = list(cut_states(files, r["trace"]))
    booted = run_jobs(kind, scratch, [job(state, specs[3]) for _, state in first])
    second = [(where, b, where2, s) for (where, state), b in zip(first, booted, strict=True)
              for where2, s in cut_states(state, b["trace"])]  # fmt: skip
    again = run_jobs(kind, scratch, [job(s) for *_, s in second])
    for (where, _), b in zip(first, booted, strict=True):
        assert b["loaded"] in (specs[1], specs[2]), f"cut {where}: booted {b['loaded']}"
    for (where, b, where2, _), b2 in zip(second, again, strict=True):
        assert b2["loaded"] in (b["loaded"], specs[3]), (
            f"cut {where}, booted {b['loaded']}, then cut {where2} of the next save: booted {b2['loaded']}"
        )
    return len(first) + len(second)


def test_the_lamp_node_boots_a_complete_program_after_a_cut_at_every_byte(tmp_path: Path) -> None:
    assert check_cuts("lamp", tmp_path, PROGRAMS) > 1000


def test_the_dongle_keeps_its_ack_pending_alarms_after_a_cut_at_every_byte(tmp_path: Path) -> None:
    assert check_cuts("dongle", tmp_path, ALARMS) > 1000
