"""A power-cut file system for tests: a FUSE mount that loses exactly what was not fsynced.

Owns: ``PowerCutFS`` (the test's handle: mount a ``Volume`` of ``disk`` at ``mount`` in a child
process, ``cut()`` it, ``stats()``), ``holders`` (the processes with a file, a mapping or a cwd
under a path) and ``fuse_missing`` (why this machine cannot mount, or None). What the model
keeps and loses is in ``devtools.powercut.model``'s docstring; the FUSE side in ``.ops``.

The file system runs in its own process (``python -m devtools.powercut mount DISK MOUNT
--control DIR``), so a process killed on the mount cannot take it down. ``cut()``:

1. SIGKILLs every process (never this one, never the file system's) with an open file, a mapped
   file or a cwd under the mount, and waits until they are gone;
2. asks the file system to drop its volatile state (optionally keeping a random prefix of each
   file's unsynced writes: torn writes) and unmounts it (lazily, then by aborting the FUSE
   connection, if this process still holds a file there: those descriptors then fail);
3. mounts afresh from the backing directory: the mount shows exactly what was durable.

A chaos row: ``with PowerCutFS(data_dir_disk, data_dir) as fs:`` start the agent with
``data_dir``, run the stream, ``fs.cut()`` instead of kill -9, start the agent again.

Must not import: edge_agent, twin.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def fuse_missing() -> str | None:
    """Why a FUSE mount cannot work here (no /dev/fuse, fusermount3, libfuse3, mfusepy), or None."""
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse (a container without the FUSE device)"
    if shutil.which("fusermount3") is None:
        return "no fusermount3 on PATH (Debian package fuse3)"
    try:
        import mfusepy  # noqa: F401
    except (ImportError, OSError) as exc:  # mfusepy raises EnvironmentError when libfuse is absent
        return f"mfusepy unusable: {exc}"
    return None


def holders(path: Path) -> list[int]:
    """Pids with an open file, a mapped file, a cwd or a root at or under ``path``."""
    prefix = str(path.resolve())
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        links = [f"/proc/{entry.name}/cwd", f"/proc/{entry.name}/root"]
        with contextlib.suppress(OSError):
            links += [f"/proc/{entry.name}/fd/{fd}" for fd in os.listdir(f"/proc/{entry.name}/fd")]
        targets = []
        for link in links:
            with contextlib.suppress(OSError):
                targets.append(os.readlink(link))
        with contextlib.suppress(OSError), open(f"/proc/{entry.name}/maps") as maps:
            targets += [line.split(maxsplit=5)[-1].strip() for line in maps if "/" in line]
        if any(t == prefix or t.startswith(prefix + "/") for t in targets):
            found.append(int(entry.name))
    return found


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie holds no files
    except OSError:
        return True


class PowerCutFS:
    """``with PowerCutFS(disk, mount) as fs:`` a power-cut mount of ``disk`` at ``mount``."""

    def __init__(self, disk: Path | str, mount: Path | str, *, deadline: float = 30.0) -> None:
        self.disk = Path(disk).resolve()
        self.mount_dir = Path(mount).resolve()
        self.deadline = deadline
        self.control = Path(tempfile.mkdtemp(prefix="powercut-"))
        self.process: subprocess.Popen[bytes] | None = None
        self.killed: list[int] = []  # pids the cuts killed, in order

    def __enter__(self) -> PowerCutFS:
        self.mount()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.unmount()
        shutil.rmtree(self.control, ignore_errors=True)

    @property
    def log(self) -> Path:
        return self.control / "fs.log"

    def mount(self) -> None:
        if self.process is not None:
            raise RuntimeError(f"{self.mount_dir} is already mounted")
        self.disk.mkdir(parents=True, exist_ok=True)
        self.mount_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        args = [sys.executable, "-m", "devtools.powercut", "mount", str(self.disk), str(self.mount_dir)]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [*args, "--control", str(self.control)], env=env, stdout=log, stderr=log, start_new_session=True
            )
        end = time.monotonic() + self.deadline
        while not os.path.ismount(self.mount_dir):
            if self.process.poll() is not None or time.monotonic() > end:
                self.process.kill()
                self.process.wait()
                self.process = None
                raise RuntimeError(f"powercut mount of {self.mount_dir} failed: {self.log.read_text()[-2000:]}")
            time.sleep(0.02)

    def unmount(self, *, cut: bool = False, torn_seed: int | None = None) -> None:
        """Unmount: cleanly (everything visible becomes durable), or as a power cut."""
        if self.process is None:
            return
        if cut:
            (self.control / "cut.json").write_text(json.dumps({"torn_seed": torn_seed}))
        conn = os.stat(self.mount_dir).st_dev
        plain = subprocess.run(["fusermount3", "-u", str(self.mount_dir)], capture_output=True, check=False)
        if plain.returncode != 0:  # this process still holds something there
            subprocess.run(["fusermount3", "-u", "-z", str(self.mount_dir)], capture_output=True, check=False)
            with contextlib.suppress(OSError):
                Path(f"/sys/fs/fuse/connections/{os.minor(conn)}/abort").write_text("1")
        try:
            self.process.wait(self.deadline)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise RuntimeError(
                f"powercut FS at {self.mount_dir} did not stop: {self.log.read_text()[-2000:]}"
            ) from None
        finally:
            self.process = None

    def cut(self, keep_prefix_rng: random.Random | None = None, *, also: Iterable[int] = ()) -> list[int]:
        """A power cut: kill the mount's users, drop what was not synced, remount. Returns the pids killed.

        ``also``: more pids to kill with them, e.g. a broker that opens its persistence file only
        while saving (a process with nothing open on the mount at the instant of the cut is
        otherwise left running, as if it were on another machine).
        """
        spare = {os.getpid(), self.process.pid if self.process else -1}
        victims = [pid for pid in dict.fromkeys([*holders(self.mount_dir), *also]) if pid not in spare]
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        end = time.monotonic() + self.deadline
        while not all(_gone(pid) for pid in victims):
            if time.monotonic() > end:
                raise RuntimeError(f"processes {victims} on {self.mount_dir} did not die")
            time.sleep(0.01)
        self.killed += victims
        seed = None if keep_prefix_rng is None else keep_prefix_rng.getrandbits(63)
        self.unmount(cut=True, torn_seed=seed)
        self.mount()
        return victims

    def stats(self) -> dict[str, Any]:
        """Counts over all cuts so far: cuts, bytes_discarded, entries_discarded, torn_writes."""
        path = self.control / "stats.json"
        counts: dict[str, Any] = {"cuts": 0, "bytes_discarded": 0, "entries_discarded": 0, "torn_writes": 0}
        if path.exists():
            counts.update(json.loads(path.read_text()))
        return counts
