"""DeadlineTimer on each of its ways to wait (os.timerfd_*, libc through ctypes, asyncio.sleep):
never before the deadline, not rounded up to a whole millisecond, and its fd closed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable

import pytest

from edge_agent.transports import deadline_timer
from edge_agent.transports.deadline_timer import DeadlineTimer

BACKENDS: dict[str, Callable[[], deadline_timer._Backend | None]] = {
    "os": deadline_timer._os_backend,  # Python >= 3.13
    "ctypes": deadline_timer._ctypes_backend,
}


@pytest.fixture(params=sorted(BACKENDS))
def timer(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> DeadlineTimer:
    backend = BACKENDS[request.param]()
    if backend is None:
        pytest.skip(f"no timerfd through {request.param} here")
    monkeypatch.setattr(deadline_timer, "_backend", lambda: backend)
    return DeadlineTimer()


async def test_waits_end_after_the_deadline_not_rounded_up_to_a_millisecond(timer: DeadlineTimer) -> None:
    """Never before the deadline; and not on epoll's whole milliseconds: a wait of 1.2 ms
    through asyncio.sleep always lasts 2 ms or more (the selector rounds its timeout up), so
    most of these must end well before that (a loaded machine may delay a few)."""
    timer.open()
    assert timer.precise
    late = []
    took = []
    try:
        for _ in range(100):
            start = time.monotonic()
            deadline = start + 0.0012
            await timer.wait_until(deadline)
            end = time.monotonic()
            late.append(end - deadline)
            took.append(end - start)
        await timer.wait_until(time.monotonic() - 1)  # already past: at once
    finally:
        timer.close()
    assert min(late) >= 0
    before_rounding = sum(t < 0.0019 for t in took)
    assert before_rounding >= 50, f"only {before_rounding} of 100 waits of 1.2 ms ended before 1.9 ms"


async def test_a_cancelled_wait_leaves_no_stale_expiry_for_the_next(timer: DeadlineTimer) -> None:
    timer.open()
    try:
        waiting = asyncio.ensure_future(timer.wait_until(time.monotonic() + 0.001))
        await asyncio.sleep(0)
        waiting.cancel()
        await asyncio.sleep(0.003)  # the cancelled deadline passes (and fires) meanwhile
        deadline = time.monotonic() + 0.02
        await timer.wait_until(deadline)
        assert time.monotonic() >= deadline
    finally:
        timer.close()


async def test_closing_ends_a_wait_and_closes_the_fd(timer: DeadlineTimer) -> None:
    timer.open()
    fd = timer._fd
    waiting = asyncio.ensure_future(timer.wait_until(time.monotonic() + 60))
    await asyncio.sleep(0)
    timer.close()
    async with asyncio.timeout(1):
        await waiting
    assert not timer.precise
    with contextlib.suppress(FileNotFoundError):  # (or the number went to another fd since)
        assert os.readlink(f"/proc/self/fd/{fd}") != "anon_inode:[timerfd]"


async def test_without_a_timerfd_it_sleeps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deadline_timer, "_backend", lambda: None)
    timer = DeadlineTimer()
    timer.open()
    assert not timer.precise
    deadline = time.monotonic() + 0.002
    await timer.wait_until(deadline)
    assert time.monotonic() >= deadline
    timer.close()
