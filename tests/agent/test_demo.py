"""The main job: `just demo` runs one village night and passes all its own checks."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys


def test_demo_runs_a_village_night_and_exits_zero() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "devtools.demo",
            "--speed",
            "4800",
            "--http",
            "127.0.0.1:0",
            "--centre-console",
            "127.0.0.1:0",
        ],
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
        assert re.search(r"SMS reply acknowledged\s*│ ok", out)
    assert "status page: http://127.0.0.1:" in out  # served while the night runs
    # the district centre watched the night and rolled the candidate out at dawn with `centre rollout`:
    # the gateway runs it (the demo asks the agent) and the console, logged in over HTTP, shows it
    assert "centre console: http://127.0.0.1:" in out
    assert re.search(r"centre rolled the policy out\s*│ ok\s*│ naxi-v01 runs v1 \(naxi-eco\)", out), out
    assert re.search(r"console shows the rollout\s*│ ok\s*│ v1-\w+ \| v1 \| succeeded", out), out
