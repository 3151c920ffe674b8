"""Waiting on the event loop until a ``time.monotonic()`` deadline, without asyncio's rounding.

Owns: ``DeadlineTimer``, a one-shot timer for one asyncio loop. asyncio's own timers are late
by up to a millisecond (the epoll selector rounds every timeout up to a whole millisecond),
over half of a Modbus inter-frame silence at 115,200 baud (1.75 ms); a timerfd wakes the
loop tens of microseconds after its deadline. On Linux this is a timerfd
on CLOCK_MONOTONIC (the clock ``time.monotonic()`` reads there), armed at the absolute
deadline and watched with ``loop.add_reader``: no thread, no busy wait, the loop stays free.
``os.timerfd_*`` where Python has them (3.13+), else libc's ``timerfd_create`` /
``timerfd_settime`` through ctypes; where neither works (not Linux), ``asyncio.sleep``.
One fd per timer, opened by ``open()`` and closed by ``close()``.

A wait may end late, never early: the kernel fires a timerfd at or after its expiry, and the
deadline is rounded up to the next nanosecond. Callers that must never be early still compare
the clock themselves after the wait (the float deadline is not exact).

Must not import: anything of ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any

__all__ = ["DeadlineTimer"]

log = logging.getLogger(__name__)

_CLOCK_MONOTONIC = 1  # linux/time.h
_TFD_TIMER_ABSTIME = 1  # linux/timerfd.h
_TFD_NONBLOCK = 0o4000  # = O_NONBLOCK
_TFD_CLOEXEC = 0o2000000  # = O_CLOEXEC


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


# (create() -> fd, arm(fd, absolute deadline in ns)); None: no timerfd here
_Backend = tuple[Callable[[], int], Callable[[int, int], None]]


def _os_backend() -> _Backend | None:
    create: Any = getattr(os, "timerfd_create", None)
    settime_ns: Any = getattr(os, "timerfd_settime_ns", None)
    if create is None or settime_ns is None:
        return None
    flags = os.TFD_NONBLOCK | os.TFD_CLOEXEC  # type: ignore[attr-defined,unused-ignore]
    abstime = os.TFD_TIMER_ABSTIME  # type: ignore[attr-defined,unused-ignore]

    def open_fd() -> int:
        return int(create(time.CLOCK_MONOTONIC, flags=flags))

    def arm(fd: int, deadline_ns: int) -> None:
        settime_ns(fd, flags=abstime, initial=deadline_ns)

    return open_fd, arm


def _ctypes_backend() -> _Backend | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the process's own symbols: libc is among them
        create = libc.timerfd_create
        settime = libc.timerfd_settime
    except (OSError, AttributeError):
        return None
    create.argtypes = [ctypes.c_int, ctypes.c_int]
    create.restype = ctypes.c_int
    settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Itimerspec), ctypes.POINTER(_Itimerspec)]
    settime.restype = ctypes.c_int

    def open_fd() -> int:
        fd = int(create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC))
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"timerfd_create: {os.strerror(err)}")
        return fd

    def arm(fd: int, deadline_ns: int) -> None:
        spec = _Itimerspec()
        spec.it_value.tv_sec, spec.it_value.tv_nsec = divmod(deadline_ns, 1_000_000_000)
        if settime(fd, _TFD_TIMER_ABSTIME, ctypes.byref(spec), None) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"timerfd_settime: {os.strerror(err)}")

    return open_fd, arm


@functools.cache
def _backend() -> _Backend | None:
    """A timerfd on the clock ``time.monotonic()`` reads, or None."""
    if time.get_clock_info("monotonic").implementation != "clock_gettime(CLOCK_MONOTONIC)":
        return None
    return _os_backend() or _ctypes_backend()


class DeadlineTimer:
    """``await timer.wait_until(deadline)``: until ``time.monotonic() >= deadline`` (or a little
    later). ``open()`` on the loop that will wait, ``close()`` when done; one wait at a time.
    Without a timerfd (or before ``open()``) it waits with ``asyncio.sleep``."""

    def __init__(self) -> None:
        self._fd = -1
        self._arm: Callable[[int, int], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiter: asyncio.Future[None] | None = None

    @property
    def precise(self) -> bool:
        """True while waits run on a timerfd (False: asyncio.sleep, up to ~1 ms late)."""
        return self._fd >= 0

    def open(self) -> None:
        """Create the fd and watch it on the running loop (no timerfd here: stay on asyncio.sleep)."""
        if self._fd >= 0:
            return
        backend = _backend()
        if backend is None:
            return
        open_fd, arm = backend
        loop = asyncio.get_running_loop()
        try:
            fd = open_fd()
        except OSError as exc:  # (out of fds, a sandbox refusing timerfd_create)
            log.warning("no timerfd (%s): waits on asyncio.sleep, up to 1 ms late", exc)
            return
        try:
            loop.add_reader(fd, self._fired)
        except (NotImplementedError, OSError, ValueError):  # a loop that cannot watch fds
            os.close(fd)
            return
        self._fd, self._arm, self._loop = fd, arm, loop

    def close(self) -> None:
        """Stop watching and close the fd; a wait in progress ends (as if the deadline came)."""
        fd, self._fd = self._fd, -1
        if fd < 0:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(fd)
        self._loop = self._arm = None
        os.close(fd)
        self._wake()

    async def wait_until(self, deadline: float) -> None:
        if self._fd < 0 or self._arm is None:
            await asyncio.sleep(max(0.0, deadline - time.monotonic()))
            return
        assert self._loop is not None and self._waiter is None, "one wait at a time, on the loop that opened it"
        # rounded up: the kernel fires at or after this, so never before ``deadline``; a
        # deadline already past fires at once
        self._arm(self._fd, max(1, math.ceil(deadline * 1e9)))
        self._waiter = waiter = self._loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    def _fired(self) -> None:
        with contextlib.suppress(BlockingIOError):  # already read (or re-armed since): no expiry
            os.read(self._fd, 8)
            self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
