"""The lamp node's and the dongle's flash store under the MicroPython unix port on the power-cut
FUSE file system (devtools.powercut): what is not fsynced is lost at a cut, a torn write keeps a
sector-aligned prefix. tests/micropython/flash_cuts.py (``saver``) boots the firmware's loader
from the mount and then saves record after record (lamp: program version i; dongle: an SOS from
device i in flight, waiting for its ACK), printing ``saved i`` when each save has returned; the
test cuts the power at a random moment and boots the loader again: it must find a complete
record no older than the last one whose save returned (the node runs the program it
acknowledged; the dongle still holds the alarm it sent), never the default. The answer is the
saver's own "saved" lines read before the cut, not the loader's output.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import time
from pathlib import Path

import pytest

from devtools.powercut import PowerCutFS, fuse_missing
from hardware.hil.procs import DONGLE_DIR, LAMP_DIR, micropython_binary, micropython_path

pytestmark = [
    pytest.mark.hil,
    pytest.mark.micropython,
    pytest.mark.fuse,
    pytest.mark.timeout(120),
    pytest.mark.skipif(fuse_missing() is not None, reason=f"no FUSE mount here: {fuse_missing()}"),
]

SCRIPT = Path(__file__).resolve().parents[1] / "micropython" / "flash_cuts.py"
CUTS = 8  # per firmware


def loaded_index(kind: str, loaded: object) -> int:
    if loaded is None:
        return 0
    if kind == "lamp":
        assert isinstance(loaded, list)
        version, steps = loaded
        assert steps == [[version % 1440, version % 101]], f"a program mixed from two saves: {loaded}"
        return int(version)
    assert isinstance(loaded, dict)
    assert loaded["queue"] == [] and loaded["flight"][0] == 1, f"not the saved alarm: {loaded}"
    return int(loaded["flight"][1])


@pytest.mark.parametrize("kind", ["lamp", "dongle"])
def test_a_returned_save_survives_a_power_cut(kind: str, tmp_path: Path) -> None:
    exe = micropython_binary()
    if exe is None:
        pytest.skip("micropython unix port not installed")
    env = dict(os.environ, MICROPYPATH=micropython_path(LAMP_DIR if kind == "lamp" else DONGLE_DIR))
    rng = random.Random(23)
    (tmp_path / "disk").mkdir()
    mnt = tmp_path / "mnt"
    with PowerCutFS(tmp_path / "disk", mnt) as fs:
        returned = 0  # the last record whose save had returned before a cut
        for cut in range(CUTS):
            proc = subprocess.Popen(
                [exe, str(SCRIPT), "saver", kind, str(mnt)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=env, text=True,
            )  # fmt: skip
            assert proc.stdout is not None and proc.stderr is not None
            booted = loaded_index(kind, json.loads(proc.stdout.readline())["loaded"])
            assert booted >= returned, f"cut {cut}: booted record {booted}, but save {returned} had returned"
            want = rng.randint(1, 6)  # saves that return before this cut
            for _ in range(want):
                line = proc.stdout.readline()
                assert line.startswith("saved "), line + proc.stderr.read() if proc.poll() is not None else line
                returned = int(line.split()[1])
            time.sleep(rng.random() * 0.02)  # the cut lands somewhere in a later save
            fs.cut(keep_prefix_rng=random.Random(rng.random()), also=[proc.pid])
            proc.wait(timeout=30)
            proc.stdout.close()
            proc.stderr.close()
        out = subprocess.run(
            [exe, str(SCRIPT), "boot", kind, str(mnt)], capture_output=True, text=True, env=env, timeout=30
        )
        assert out.returncode == 0, out.stderr
        assert loaded_index(kind, json.loads(out.stdout)["loaded"]) >= returned
        assert fs.stats()["cuts"] == CUTS
