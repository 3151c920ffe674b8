"""The accelerated clock keeps its timeline when its speed changes, and sleepers wake on time."""

from __future__ import annotations

import asyncio
import time

from edge_agent.clock import ScaledClock


async def test_a_sleeper_wakes_on_the_timeline_after_the_clock_speeds_up() -> None:
    clock = ScaledClock(start=1000.0, speed=1.0)
    woke: list[float] = []

    async def sleeper() -> None:
        await clock.sleep_until(1000.0 + 3600.0)  # an hour ahead: an hour of real time at speed 1
        woke.append(clock.now())

    task = asyncio.create_task(sleeper())
    await asyncio.sleep(0.05)
    started = time.monotonic()
    clock.set_speed(36_000.0)  # the hour now passes in about 0.1 s
    await asyncio.wait_for(task, 5)
    assert time.monotonic() - started < 2.0
    assert 3600.0 <= woke[0] - 1000.0 < 3600.0 + 36_000.0 * 0.5


async def test_the_timeline_is_continuous_across_speed_changes() -> None:
    clock = ScaledClock(start=0.0, speed=1000.0)
    await asyncio.sleep(0.02)
    before = clock.now()
    clock.set_speed(1.0)
    after = clock.now()
    assert 0 <= after - before < 1.0  # no jump: it goes on from where it was
    await asyncio.sleep(0.05)
    assert clock.now() - after < 1.0  # and at the new pace
