"""The main job: `just demo` runs one village night and passes all its own checks."""

from __future__ import annotations

import shutil
import subprocess
import sys


def test_demo_runs_a_village_night_and_exits_zero() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "devtools.demo", "--speed", "4800", "--http", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for line in ("person detected in the square", "SOS button pressed", "app notified", "driver fault"):
        assert line in out
    assert "MISSING" not in out
    assert out.count(" ok ") >= 8
    if shutil.which("gammu-smsd"):  # the SOS through Gammu's dummy phone, answered by a reply SMS
        assert "SMS (1 part(s), UCS-2): 【紧急】wear-001" in out
        assert "replies by SMS: 1 " in out
        assert "SMS reply acknowledged │ ok" in out
    assert "status page: http://127.0.0.1:" in out  # served while the night runs
