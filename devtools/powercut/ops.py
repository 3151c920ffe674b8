"""FUSE calls onto a power-cut ``Volume``, and the mount loop (the child process's main).

Owns: ``PowerCutOps`` (an ``mfusepy.Operations``: open/create/read/write/truncate/fsync/
fdatasync/fsyncdir/unlink/rename/mkdir/rmdir/chmod/utimens/statfs; no ``lock``/``flock``, so
the kernel keeps POSIX and BSD locks locally, which is what SQLite needs on one machine) and
``serve`` (mount, run until unmounted, then persist what the control file asks for and write
the stats). Page cache on (no ``direct_io``), so SQLite's shared-memory mmap of ``-shm`` works.
Single-threaded (``nothreads``): one FUSE call at a time, so the ``Volume`` needs no lock.

Must not import: edge_agent, twin.
"""

from __future__ import annotations

import errno
import json
import os
import random
import stat
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import mfusepy

from devtools.powercut.model import FsError, Node, Volume


class PowerCutOps(mfusepy.Operations):  # type: ignore[misc]
    use_ns = True

    def __init__(self, volume: Volume) -> None:
        self.volume = volume
        self.handles: dict[int, Node] = {}
        self._next_fh = 1

    def _node(self, path: str | None, fh: int | None = None) -> Node:
        if fh and fh in self.handles:
            return self.handles[fh]
        if path is None:
            raise FsError(errno.EBADF)
        return self.volume.lookup(path)

    def _handle(self, node: Node) -> int:
        fh, self._next_fh = self._next_fh, self._next_fh + 1
        self.handles[fh] = node
        return fh

    # ----- attributes -------------------------------------------------------------------------
    def getattr(self, path: str | None, fh: int | None = None) -> dict[str, Any]:
        node = self._node(path, fh)
        kind = stat.S_IFDIR if node.is_dir else stat.S_IFREG
        size = 4096 if node.is_dir else len(node.data)
        return {
            "st_mode": kind | stat.S_IMODE(node.mode),
            "st_nlink": 2 if node.is_dir else 1,
            "st_size": size,
            "st_blocks": (size + 511) // 512,
            "st_uid": os.getuid(),
            "st_gid": os.getgid(),
            "st_mtime": node.mtime_ns,
            "st_ctime": node.mtime_ns,
            "st_atime": node.mtime_ns,
        }

    def chmod(self, path: str | None, mode: int) -> int:
        node = self._node(path)
        node.mode = (node.mode & ~0o7777) | (mode & 0o7777)
        return 0

    def chown(self, path: str | None, uid: int, gid: int) -> int:
        return 0

    def utimens(self, path: str | None, times: tuple[int, int] | None = None) -> int:
        self._node(path).mtime_ns = times[1] if times else time.time_ns()
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        st = os.statvfs(self.volume.disk)
        names = ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree", "f_namemax")
        return {name: getattr(st, name) for name in names}

    # ----- directories ------------------------------------------------------------------------
    def readdir(self, path: str, fh: int) -> list[str]:
        node = self._node(path)
        if not node.is_dir:
            raise FsError(errno.ENOTDIR, path)
        return [".", "..", *node.entries]

    def mkdir(self, path: str, mode: int) -> int:
        self.volume.create(path, mode, is_dir=True)
        return 0

    def rmdir(self, path: str) -> int:
        self.volume.remove(path, is_dir=True)
        return 0

    def unlink(self, path: str) -> int:
        self.volume.remove(path, is_dir=False)
        return 0

    def rename(self, old: str, new: str) -> int:
        self.volume.rename(old, new)
        return 0

    def link(self, target: str, source: str) -> int:
        raise FsError(errno.EPERM, "hard links are not modelled")

    def symlink(self, target: str, source: str) -> int:
        raise FsError(errno.EPERM, "symlinks are not modelled")

    def fsyncdir(self, path: str | None, datasync: int, fh: int) -> int:
        self.volume.fsync_dir(self._node(path))
        return 0

    # ----- files ------------------------------------------------------------------------------
    def create(self, path: str, mode: int, flags: int = 0) -> int:
        return self._handle(self.volume.create(path, mode))

    def open(self, path: str, flags: int) -> int:
        node = self.volume.lookup(path)
        if node.is_dir:
            raise FsError(errno.EISDIR, path)
        return self._handle(node)

    def read(self, path: str | None, size: int, offset: int, fh: int) -> bytes:
        return bytes(self._node(path, fh).data[offset : offset + size])

    def write(self, path: str | None, data: bytes, offset: int, fh: int) -> int:
        return self.volume.write(self._node(path, fh), offset, data)

    def truncate(self, path: str | None, length: int, fh: int | None = None) -> int:
        self.volume.truncate(self._node(path, fh), length)
        return 0

    def fsync(self, path: str | None, datasync: int, fh: int) -> int:
        self.volume.fsync_file(self._node(path, fh))
        return 0

    def flush(self, path: str | None, fh: int) -> int:
        return 0

    def release(self, path: str | None, fh: int) -> int:
        self.handles.pop(fh, None)
        return 0


def serve(disk: Path, mount: Path, control: Path) -> None:
    """Mount ``disk`` at ``mount`` until unmounted; then do what ``control``/cut.json says.

    ``cut.json`` present: ``{"torn_seed": int | null}``, a power cut (drop the volatile state,
    torn prefixes drawn from the seed). Absent: a clean unmount (sync everything). Either way
    the stats land in ``control``/stats.json.
    """
    volume = Volume(disk)
    previous = control / "stats.json"
    if previous.exists():
        for key, value in json.loads(previous.read_text()).items():
            setattr(volume.stats, key, value)
    try:
        mfusepy.FUSE(
            PowerCutOps(volume),
            str(mount),
            foreground=True,
            nothreads=True,
            hard_remove=True,
            allow_other=True,  # brokers and daemons drop root for their own user
            fsname="powercut",
            subtype="powercut",
        )
    except RuntimeError as exc:  # an aborted connection ends the loop with an error: still ours to persist
        print(f"powercut: FUSE loop ended with {exc}", file=sys.stderr)
    order = control / "cut.json"
    if order.exists():
        seed = json.loads(order.read_text()).get("torn_seed")
        volume.cut(None if seed is None else random.Random(seed))
        order.unlink()
    else:
        volume.sync_all()
    tmp = control / "stats.json.tmp"
    tmp.write_text(json.dumps(asdict(volume.stats)))
    os.replace(tmp, previous)
