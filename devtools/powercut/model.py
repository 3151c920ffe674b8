"""The power-cut model: what a file system shows (volatile) and what a power cut leaves (durable).

Owns: ``Volume`` (an inode table loaded from a backing directory; every change lands in the
visible state at once, and in the durable state only through ``fsync_file`` / ``fsync_dir``),
``Volume.cut`` (drop the volatile state, optionally keeping a random prefix of each file's
unsynced writes: torn writes) and ``Volume.persist`` (make the backing directory equal the
durable state). No FUSE here: ``devtools.powercut.ops`` maps FUSE calls onto a ``Volume``.

The model, exactly:

- A file's *content* is durable up to its last ``fsync``/``fdatasync``. Writes and truncates
  since then are kept as a list of pending operations; a cut drops them (or, with torn writes,
  keeps the first k of them and a 512-byte-aligned prefix of the (k+1)-th if it is a write).
- A directory's *entries* (create, unlink, rename in or out, mkdir, rmdir) are durable up to the
  directory's last fsync. A file created and fsynced in a directory that was not fsynced after
  the create is gone after a cut; a rename whose directories were not fsynced reverts. A rename
  across two directories is durable in each directory when that directory is fsynced (fsync
  both, as SQLite and careful programs do; fsyncing only the target can leave the file in both).
- Kept at once, never lost: mode (chmod) and times. Not modelled: hard links and symlinks
  (refused with EPERM), xattrs, ownership (chown is accepted and ignored).
- Observed: Mosquitto 2.0 fsyncs ``mosquitto.db.new`` and renames it over ``mosquitto.db`` but
  never fsyncs the directory, so here its save is lost at a cut unless something else fsyncs
  that directory (SQLite does when it creates its WAL or journal next to it). SQLite in WAL mode
  with ``synchronous=FULL`` loses no commit; with ``OFF`` it loses everything since the last
  sync and stays whole (``tests/powercut``).
- The backing directory always holds the durable state of every file reachable by durable
  entries from the root (written through on each fsync); a file fsynced but not yet durably
  linked keeps its durable content in memory until its directory is fsynced (or is lost).

Must not import: edge_agent, twin (a test tool over plain files).
"""

from __future__ import annotations

import os
import random
import shutil
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT_INO = 1
SECTOR = 512


class FsError(OSError):
    """An errno for the FUSE caller (ENOENT, ENOTDIR, ...)."""

    def __init__(self, code: int, what: str = "") -> None:
        super().__init__(code, os.strerror(code), what)


@dataclass
class Write:
    offset: int
    data: bytes


@dataclass
class Truncate:
    length: int


Pending = Write | Truncate


@dataclass
class Node:
    ino: int
    is_dir: bool
    mode: int
    mtime_ns: int = field(default_factory=time.time_ns)
    data: bytearray = field(default_factory=bytearray)  # visible content (files)
    durable: bytearray = field(default_factory=bytearray)  # content as of the last fsync
    pending: list[Pending] = field(default_factory=list)  # writes and truncates since then
    entries: dict[str, int] = field(default_factory=dict)  # visible names (directories)
    durable_entries: dict[str, int] = field(default_factory=dict)  # names as of the last fsync


def _apply(buf: bytearray, op: Pending) -> None:
    if isinstance(op, Truncate):
        if op.length < len(buf):
            del buf[op.length :]
        else:
            buf.extend(bytes(op.length - len(buf)))
        return
    end = op.offset + len(op.data)
    if op.offset > len(buf):
        buf.extend(bytes(op.offset - len(buf)))
    buf[op.offset : end] = op.data


@dataclass
class Stats:
    cuts: int = 0
    bytes_discarded: int = 0  # bytes of unsynced writes a cut dropped (torn prefixes kept excluded)
    entries_discarded: int = 0  # unsynced directory entries a cut reverted
    torn_writes: int = 0  # pending writes a cut kept only a prefix of


class Volume:
    """The inode table over one backing directory (the "disk")."""

    def __init__(self, disk: Path) -> None:
        self.disk = disk
        self.nodes: dict[int, Node] = {}
        self._next_ino = ROOT_INO
        self.stats = Stats()
        root = self._load(disk)
        assert root.ino == ROOT_INO

    # ----- loading and lookup -----------------------------------------------------------------
    def _new(self, is_dir: bool, mode: int) -> Node:
        node = Node(self._next_ino, is_dir, mode)
        self._next_ino += 1
        self.nodes[node.ino] = node
        return node

    def _load(self, path: Path) -> Node:
        st = path.lstat()
        if stat.S_ISDIR(st.st_mode):
            node = self._new(True, st.st_mode)
            for child in sorted(path.iterdir()):
                if child.is_symlink() or not (child.is_dir() or child.is_file()):
                    continue  # not modelled; left alone on the disk
                node.entries[child.name] = self._load(child).ino
            node.durable_entries = dict(node.entries)
        else:
            node = self._new(False, st.st_mode)
            node.data = bytearray(path.read_bytes())
            node.durable = bytearray(node.data)
        node.mtime_ns = st.st_mtime_ns
        return node

    def lookup(self, path: str) -> Node:
        node = self.nodes[ROOT_INO]
        for part in (p for p in path.split("/") if p):
            if not node.is_dir:
                raise FsError(20, path)  # ENOTDIR
            ino = node.entries.get(part)
            if ino is None:
                raise FsError(2, path)  # ENOENT
            node = self.nodes[ino]
        return node

    def parent_of(self, path: str) -> tuple[Node, str]:
        head, _, name = path.rstrip("/").rpartition("/")
        parent = self.lookup(head or "/")
        if not parent.is_dir:
            raise FsError(20, path)
        if not name:
            raise FsError(22, path)  # EINVAL: the root has no parent
        return parent, name

    # ----- namespace changes (visible at once, durable on fsync of the directory) -------------
    def create(self, path: str, mode: int, is_dir: bool = False) -> Node:
        parent, name = self.parent_of(path)
        if name in parent.entries:
            raise FsError(17, path)  # EEXIST
        node = self._new(is_dir, mode)
        parent.entries[name] = node.ino
        parent.mtime_ns = time.time_ns()
        return node

    def remove(self, path: str, is_dir: bool) -> None:
        parent, name = self.parent_of(path)
        node = self.lookup(path)
        if is_dir and not node.is_dir:
            raise FsError(20, path)
        if not is_dir and node.is_dir:
            raise FsError(21, path)  # EISDIR
        if is_dir and node.entries:
            raise FsError(39, path)  # ENOTEMPTY
        del parent.entries[name]
        parent.mtime_ns = time.time_ns()

    def rename(self, old: str, new: str) -> None:
        old_parent, old_name = self.parent_of(old)
        node = self.lookup(old)
        new_parent, new_name = self.parent_of(new)
        target_ino = new_parent.entries.get(new_name)
        if target_ino is not None and target_ino != node.ino:
            target = self.nodes[target_ino]
            if target.is_dir != node.is_dir:
                raise FsError(21 if target.is_dir else 20, new)
            if target.is_dir and target.entries:
                raise FsError(39, new)
        del old_parent.entries[old_name]
        new_parent.entries[new_name] = node.ino
        old_parent.mtime_ns = new_parent.mtime_ns = time.time_ns()

    # ----- content changes (visible at once, durable on fsync of the file) --------------------
    def write(self, node: Node, offset: int, data: bytes) -> int:
        op = Write(offset, bytes(data))
        _apply(node.data, op)
        node.pending.append(op)
        node.mtime_ns = time.time_ns()
        return len(data)

    def truncate(self, node: Node, length: int) -> None:
        if node.is_dir:
            raise FsError(21)
        op = Truncate(length)
        _apply(node.data, op)
        node.pending.append(op)
        node.mtime_ns = time.time_ns()

    # ----- durability -------------------------------------------------------------------------
    def fsync_file(self, node: Node) -> None:
        if node.is_dir:
            self.fsync_dir(node)
            return
        ops, node.pending = node.pending, []
        self._make_durable(node, ops)

    def _make_durable(self, node: Node, ops: list[Pending]) -> None:
        for op in ops:
            _apply(node.durable, op)
        paths = self.durable_paths().get(node.ino, [])
        for rel in paths:  # write through: the same operations on the backing file
            with open(self.disk / rel, "r+b") as f:
                for op in ops:
                    if isinstance(op, Truncate):
                        f.truncate(op.length)
                    else:
                        f.seek(op.offset)
                        f.write(op.data)

    def fsync_dir(self, node: Node) -> None:
        node.durable_entries = dict(node.entries)
        self.persist()

    def sync_all(self) -> None:
        """Everything visible becomes durable (a clean shutdown's sync)."""
        for node in self.nodes.values():
            if node.is_dir:
                node.durable_entries = dict(node.entries)
            else:
                ops, node.pending = node.pending, []
                for op in ops:
                    _apply(node.durable, op)
        self.persist()

    def durable_paths(self) -> dict[int, list[str]]:
        """Every inode reachable from the root through durable entries, with its paths."""
        found: dict[int, list[str]] = {}

        def walk(node: Node, rel: str, above: frozenset[int]) -> None:
            for name, ino in node.durable_entries.items():
                child = self.nodes[ino]
                path = f"{rel}/{name}" if rel else name
                found.setdefault(ino, []).append(path)
                if child.is_dir and ino not in above:
                    walk(child, path, above | {ino})

        walk(self.nodes[ROOT_INO], "", frozenset({ROOT_INO}))
        return found

    def persist(self) -> None:
        """Make the backing directory equal the durable state (dirs, files, content, modes)."""
        want: dict[str, Node] = {}
        for ino, paths in self.durable_paths().items():
            for rel in paths:
                want[rel] = self.nodes[ino]
        for dirpath, dirnames, filenames in os.walk(self.disk, topdown=False):
            for name in [*filenames, *dirnames]:
                full = Path(dirpath) / name
                rel = full.relative_to(self.disk).as_posix()
                node = want.get(rel)
                if full.is_symlink():
                    continue
                if node is None or node.is_dir != full.is_dir():
                    if full.is_dir():
                        shutil.rmtree(full)
                    else:
                        full.unlink()
        for rel in sorted(want):
            node, full = want[rel], self.disk / rel
            if node.is_dir:
                full.mkdir(exist_ok=True)
            elif not full.exists() or full.stat().st_size != len(node.durable) or full.read_bytes() != node.durable:
                full.write_bytes(node.durable)
            os.chmod(full, stat.S_IMODE(node.mode))

    def cut(self, rng: random.Random | None = None) -> None:
        """A power cut: the durable state (plus torn prefixes if ``rng``) is all that is left."""
        self.stats.cuts += 1
        durable = self.durable_paths()
        for node in self.nodes.values():
            if node.is_dir:
                lost = set(node.entries.items()) ^ set(node.durable_entries.items())
                self.stats.entries_discarded += len(lost)
                continue
            ops, node.pending = node.pending, []
            keep: list[Pending] = []
            if rng is not None and ops:
                k = rng.randint(0, len(ops))
                keep = ops[:k]
                if k < len(ops) and isinstance(ops[k], Write):
                    torn = ops[k]
                    assert isinstance(torn, Write)
                    cut_at = rng.randint(0, len(torn.data) // SECTOR) * SECTOR
                    if 0 < cut_at < len(torn.data):
                        keep.append(Write(torn.offset, torn.data[:cut_at]))
                        self.stats.torn_writes += 1
            dropped = sum(len(op.data) for op in ops if isinstance(op, Write))
            self.stats.bytes_discarded += dropped - sum(len(op.data) for op in keep if isinstance(op, Write))
            if keep and node.ino in durable:
                self._make_durable(node, keep)
        self.persist()
