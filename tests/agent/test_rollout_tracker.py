"""The rollout retry schedule: one definition, used by the gateway's tracker and the twin."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge_agent.agent.rollout import RolloutTracker
from edge_agent.policy.retry import MAX_RETRY_S, retry_wait
from twin.rollout import retry_wait as twin_retry_wait


class FakeClock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_silent_lamp_gets_copies_at_0_2_2_2_4_8_16_16_seconds_after_each_ack() -> None:
    clock = FakeClock(100.0)
    tracker = RolloutTracker(["L1", "L2"], version=0, clock=clock)
    assert tracker.due(0.0) == [], "version 0 (the config's file) is never pushed"
    tracker.install(3)
    now, sends = 100.0, []
    for _ in range(2000):  # a 0.5 s tick for 1,000 s
        for lamp in tracker.due(now):
            if lamp == "L1":
                sends.append(now)
            tracker.sent(lamp, now)  # the broker acks at once
        if now == 100.0:
            tracker.report("L2", 3)  # L2 confirms after its first copy
        now += 0.5
        clock.now = now
    gaps = np.diff(sends)[:7].tolist()
    assert sends[0] == 100.0
    assert gaps == [2.0, 2.0, 2.0, 4.0, 8.0, 16.0, 16.0]
    assert tracker.summary("gw") == {"v": 1, "gateway": "gw", "policy_version": 3, "lamps": 2, "on_version": 1,
                                     "retries": len(sends) - 1}  # fmt: skip


def test_a_copy_in_flight_is_not_sent_twice_and_unreachable_lamps_wait() -> None:
    tracker = RolloutTracker(["L1", "L2"], version=2)
    assert tracker.due(0.0, eligible=["L2"]) == ["L2"]
    assert tracker.due(50.0, eligible=["L2"]) == [], "no PUBACK yet: still in flight"
    assert tracker.due(50.0) == ["L1"]
    tracker.report("L1", 2)
    tracker.install(3)  # a newer version: everyone again, at once
    assert sorted(tracker.due(50.0)) == ["L1", "L2"]


def test_the_twin_uses_the_gateways_schedule() -> None:
    attempts = np.arange(0, 12)
    assert twin_retry_wait(attempts).tolist() == [retry_wait(int(a)) for a in attempts]


def test_retries_wait_while_confirmations_are_arriving_then_go_at_once() -> None:
    """A slow path (reports queueing) is not a lossy one: while lamps keep confirming, a
    copy whose 2 s are up waits, and goes as soon as confirmations stop for quiet_s."""
    clock = FakeClock(0.0)
    lamps = [f"L{i}" for i in range(10)]
    tracker = RolloutTracker(lamps, version=1, clock=clock)
    assert sorted(tracker.due(0.0)) == sorted(lamps)
    tracker.sent("L9", 0.0)  # L9's copy is taken first, and lost
    # the broker takes the others one every 0.4 s, each lamp confirming 50 ms later
    for i, lamp in enumerate(lamps[:9]):
        tracker.sent(lamp, 0.4 * i)
        clock.now = 0.4 * i + 0.05
        tracker.report(lamp, 1)
        assert tracker.due(clock.now) == [], f"{clock.now}: confirmations still arriving"
    last = clock.now  # 3.25 s
    assert tracker.deferred == 1, "L9 was held back (counted once)"
    assert tracker.rto < 2.0, "a quick path: the schedule's 2 s apply"
    assert tracker.next_due(last) == pytest.approx(last + tracker.quiet_s)
    assert tracker.due(last + tracker.quiet_s - 0.01) == []
    assert tracker.due(last + tracker.quiet_s) == ["L9"]
    assert tracker.retries == 1
    assert tracker.turnaround == [pytest.approx(0.05)] * 9


def test_a_steady_trickle_cannot_hold_a_retry_back_beyond_the_longest_wait() -> None:
    clock = FakeClock(0.0)
    lamps = [f"L{i}" for i in range(100)]
    tracker = RolloutTracker(lamps, version=1, clock=clock)
    tracker.due(0.0)
    for lamp in lamps:
        tracker.sent(lamp, 0.0)
    sent_again = None
    for i, lamp in enumerate(lamps[1:]):  # L0 is lost; the others confirm every 0.25 s
        clock.now = 0.25 * (i + 1)
        tracker.report(lamp, 1)
        if "L0" in tracker.due(clock.now):
            sent_again = clock.now
            break
    assert sent_again == MAX_RETRY_S


def test_on_a_quiet_path_the_schedule_is_unchanged_and_next_due_says_when() -> None:
    clock = FakeClock(0.0)
    tracker = RolloutTracker(["L1", "L2"], version=1, clock=clock)
    tracker.due(0.0)
    tracker.sent("L1", 0.1)
    tracker.sent("L2", 0.1)
    clock.now = 0.15
    tracker.report("L2", 1)  # confirms at once; L1's copy was lost
    assert tracker.next_due(0.2) == 2.1
    assert tracker.due(2.09) == []
    assert tracker.due(2.1) == ["L1"]
    assert tracker.next_due(2.1) == math.inf, "in flight until the broker takes it"
    tracker.report("L1", 1)
    assert tracker.next_due(3.0) == math.inf
    assert tracker.turnaround == [pytest.approx(0.05)], "only first copies are timed (Karn)"


def test_the_retry_wait_grows_with_the_measured_turnaround_and_never_below_the_schedule() -> None:
    clock = FakeClock(0.0)
    lamps = [f"L{i}" for i in range(20)]
    tracker = RolloutTracker(lamps, version=1, clock=clock, quiet_s=0.0)
    assert tracker.rto == 0.0
    tracker.due(0.0)
    for lamp in lamps:
        tracker.sent(lamp, 0.0)
    for i, lamp in enumerate(lamps[:10]):  # a slow path: reports 3 s after the PUBACK
        clock.now = 3.0 + 0.01 * i
        tracker.report(lamp, 1)
    assert 3.0 < tracker.rto <= MAX_RETRY_S
    assert tracker.due(clock.now) == [], "2 s have passed, but the path takes 3 s"
    assert sorted(tracker.due(tracker.rto)) == sorted(lamps[10:])
    quick = RolloutTracker(["A", "B"], version=1, clock=clock)
    quick.due(0.0)
    quick.sent("A", 0.0)
    quick.sent("B", 0.0)
    clock.now = 0.01
    quick.report("A", 1)
    assert quick.rto < 2.0 and quick.next_due(0.01) == 2.0, "a quick path keeps the 2 s schedule"
