"""The one clock interface: real time, accelerated time, or a hand-driven clock for tests.

Owns: ``now()`` (epoch seconds on the gateway's timeline) and sleeping until a moment on that
timeline. The engine, timers and demo only ever use a ``Clock``; no code calls ``time.time``
or ``asyncio.sleep`` for timeline purposes directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the Unix epoch on this clock's timeline."""
        ...

    async def sleep_until(self, when: float) -> None:
        """Return once ``now() >= when``."""
        ...


class ScaledClock:
    """Wall time, optionally accelerated: ``speed`` timeline seconds pass per real second.

    ``ScaledClock()`` is the real clock. ``ScaledClock(start=t, speed=720)`` runs a night in a
    minute. Two clocks built with the same ``start``, ``speed`` and ``anchor`` share a timeline,
    which is how a restarted agent in a test continues the same accelerated night.
    """

    def __init__(self, start: float | None = None, speed: float = 1.0, anchor: float | None = None) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.anchor = time.time() if anchor is None else anchor
        self.start = self.anchor if start is None else start
        self.speed = speed
        self._changed = asyncio.Event()  # set when the speed changes: sleepers work out their wait again

    def now(self) -> float:
        return self.start + (time.time() - self.anchor) * self.speed

    def set_speed(self, speed: float) -> None:
        """From now on ``speed`` timeline seconds per real second (the demo slows down for the SOS)."""
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.start, self.anchor, self.speed = self.now(), time.time(), speed
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def sleep_until(self, when: float) -> None:
        while True:
            remaining = when - self.now()
            if remaining <= 0:
                return
            with contextlib.suppress(TimeoutError):  # the usual way out: the time came
                async with asyncio.timeout(remaining / self.speed):  # (3.11's wait_for can swallow a cancel)
                    await self._changed.wait()


class ManualClock:
    """A clock that moves only when told (``advance``); sleepers wake in deadline order."""

    def __init__(self, start: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00Z
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    async def sleep_until(self, when: float) -> None:
        if when <= self._now:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (when, next(self._seq), future))
        await future

    async def advance(self, seconds: float, *, settle: int = 20) -> None:
        """Move time forward, waking each sleeper at its own deadline and letting it run."""
        target = self._now + seconds
        while self._sleepers and self._sleepers[0][0] <= target:
            when, _, future = heapq.heappop(self._sleepers)
            self._now = max(self._now, when)
            if not future.done():
                future.set_result(None)
            for _ in range(settle):
                await asyncio.sleep(0)
        self._now = target
        for _ in range(settle):
            await asyncio.sleep(0)
