"""A serial line emulator: the agent opens a pty (through a stable symlink, like
/dev/serial/by-id), devices are subprocess pipes or in-process byte handlers.

Bytes from the agent go to every device; bytes from a device go to the agent and, when
``echo_to_devices`` is set, to the other devices too (an RS-485 line: everyone hears everyone).
With ``baudrate`` set, the line is paced as a half-duplex wire at 10 bits per byte: a chunk is
delivered when its last stop bit would have arrived, and chunks queue behind each other; an
in-process device's reply starts on the line when its request's last byte arrived (no turnaround).
Faults: ``loss`` (probability that a device->agent byte is dropped, seeded), ``babble(data)``
(garbage on the line), ``unplug()`` / ``replug()`` (the agent's port vanishes and returns).
Must not import: anything of ours (it moves bytes only).
"""

from __future__ import annotations

import contextlib
import os
import random
import select
import threading
import time
import tty
from collections.abc import Callable
from pathlib import Path
from typing import Protocol


class InProcessDevice(Protocol):
    def feed(self, data: bytes) -> bytes: ...


def _fd_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


class _PipeDevice:
    def __init__(self, rfd: int, wfd: int) -> None:
        self.rfd = rfd
        self.wfd = wfd


class PtyBus:
    """Relay thread between one agent-side pty and N devices."""

    def __init__(
        self,
        link_path: Path,
        *,
        baudrate: int | None = None,
        loss: float = 0.0,
        loss_to_devices: float = 0.0,
        seed: int = 1,
        echo_to_devices: bool = False,
    ) -> None:
        self.link_path = link_path
        self.baudrate = baudrate
        self.loss = loss
        self.loss_to_devices = loss_to_devices
        self.echo_to_devices = echo_to_devices
        self._rng = random.Random(seed)
        self._pipes: list[_PipeDevice] = []
        self._inproc: list[InProcessDevice] = []
        self._lock = threading.Lock()
        self._pending: list[tuple[float, str, bytes, object]] = []  # (due, dest, data, origin)
        self._line_free = 0.0
        self._master_fd = -1
        self._slave_fd = -1
        self._wake_r, self._wake_w = os.pipe()
        self._stop = False
        self._unplug_requested = False
        self._unplugged = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ptybus", daemon=True)
        self.dropped = 0
        self.tx_to_agent = 0
        self.tx_from_agent = 0
        self.tap: Callable[[str, bytes], None] | None = None
        self._open_pty()

    # --- lifecycle --------------------------------------------------------------------------
    def _open_pty(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        name = os.ttyname(slave)
        tmp = self.link_path.with_name(self.link_path.name + ".new")
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        tmp.symlink_to(name)
        tmp.replace(self.link_path)
        with self._lock:
            self._master_fd, self._slave_fd = master, slave
        self._poke()

    def start(self) -> PtyBus:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop = True
        self._poke()
        if self._thread.is_alive():
            self._thread.join(5)
        self._close_pty()
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)

    def __enter__(self) -> PtyBus:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _close_pty(self) -> None:
        with self._lock:
            fds = (self._master_fd, self._slave_fd)
            self._master_fd = self._slave_fd = -1
        for fd in fds:
            if fd >= 0:
                os.close(fd)

    def unplug(self) -> None:
        """The port vanishes: the pty closes (readers get EIO/hangup) and the path is removed.
        The relay thread does the closing (never close an fd another thread may be polling)."""
        if not self._thread.is_alive():
            self._do_unplug()
            return
        self._unplugged.clear()
        self._unplug_requested = True
        self._poke()
        if not self._unplugged.wait(5):
            raise RuntimeError("ptybus: relay thread did not unplug")

    def _do_unplug(self) -> None:
        self._close_pty()
        if self.link_path.is_symlink():
            self.link_path.unlink()

    def replug(self) -> None:
        """A new pty appears behind the same path."""
        self._open_pty()

    # --- devices and faults -----------------------------------------------------------------
    def add_pipe_device(self, rfd: int, wfd: int) -> None:
        """A device whose output we read from ``rfd`` and whose input we write to ``wfd``."""
        os.set_blocking(rfd, False)
        with self._lock:
            self._pipes.append(_PipeDevice(rfd, wfd))
        self._poke()

    def add_inprocess_device(self, device: InProcessDevice) -> None:
        with self._lock:
            self._inproc.append(device)

    def babble(self, data: bytes) -> None:
        """Put garbage on the line (heard by the agent and by every device)."""
        self._schedule(data, origin=None)

    def _poke(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    # --- relay ------------------------------------------------------------------------------
    def _schedule(self, data: bytes, origin: object, not_before: float | None = None) -> None:
        """Put ``data`` on the line: from now, or for an in-process device's reply from
        ``not_before`` (when the request's last byte arrived: a node that answers at once starts
        then, not when this thread got around to running it)."""
        now = time.monotonic() if not_before is None else not_before
        with self._lock:
            if self.baudrate:
                start = max(now, self._line_free)
                due = start + len(data) * 10.0 / self.baudrate
                self._line_free = due
            else:
                due = now
            self._pending.append((due, "line", data, origin))
        self._poke()

    def _deliver(self, data: bytes, origin: object, due: float) -> None:
        if origin != "agent":
            kept = data
            if self.loss:
                kept = bytes(b for b in data if self._rng.random() >= self.loss)
                self.dropped += len(data) - len(kept)
            self._write_agent(kept)
        devices_hear = origin == "agent" or origin is None or self.echo_to_devices
        if not devices_hear:
            return
        if origin == "agent" and self.loss_to_devices:
            kept = bytes(b for b in data if self._rng.random() >= self.loss_to_devices)
            self.dropped += len(data) - len(kept)
            data = kept
        for dev in list(self._pipes):
            if dev is origin:
                continue
            with contextlib.suppress(OSError):
                os.write(dev.wfd, data)
        for ipd in list(self._inproc):
            if ipd is origin:
                continue
            reply = ipd.feed(data)
            if reply:
                self._schedule(reply, origin=ipd, not_before=due)

    def _write_agent(self, data: bytes) -> None:
        if not data:
            return
        fd = self._master_fd
        if fd < 0:
            return
        if self.tap:
            self.tap("to_agent", data)
        self.tx_to_agent += len(data)
        view = memoryview(data)
        deadline = time.monotonic() + 1.0
        while view and time.monotonic() < deadline:
            try:
                n = os.write(fd, view)
                view = view[n:]
            except BlockingIOError:
                time.sleep(0.001)
            except OSError:
                return

    def _run(self) -> None:
        while not self._stop:
            if self._unplug_requested:
                self._unplug_requested = False
                self._do_unplug()
                self._unplugged.set()
            with self._lock:
                fds = [self._wake_r] + [d.rfd for d in self._pipes]
                if self._master_fd >= 0:
                    fds.append(self._master_fd)
                now = time.monotonic()
                due = min((p[0] for p in self._pending), default=None)
            timeout = 0.2 if due is None else max(0.0, due - now)
            try:
                readable, _, _ = select.select(fds, [], [], timeout)
            except OSError:  # a device pipe was closed under us: drop closed ones, go on
                with self._lock:
                    self._pipes = [d for d in self._pipes if _fd_open(d.rfd)]
                continue
            for fd in readable:
                if fd == self._wake_r:
                    os.read(fd, 4096)
                    continue
                try:
                    data = os.read(fd, 4096)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if fd == self._master_fd:
                    if data:
                        self.tx_from_agent += len(data)
                        if self.tap:
                            self.tap("from_agent", data)
                        self._schedule(data, origin="agent")
                    continue
                dev = next((d for d in self._pipes if d.rfd == fd), None)
                if dev is None:
                    continue
                if not data:
                    with self._lock:
                        self._pipes.remove(dev)
                    continue
                self._schedule(data, origin=dev)
            now = time.monotonic()
            with self._lock:
                ready = [p for p in self._pending if p[0] <= now]
                self._pending = [p for p in self._pending if p[0] > now]
            ready.sort(key=lambda p: p[0])
            for due, _, data, origin in ready:
                self._deliver(data, origin, due)
