"""The rollout retry schedule: one definition, used by the gateway's tracker and the twin."""

from __future__ import annotations

import numpy as np

from edge_agent.agent.rollout import RolloutTracker
from edge_agent.policy.retry import retry_wait
from twin.rollout import retry_wait as twin_retry_wait


def test_a_silent_lamp_gets_copies_at_0_2_2_2_4_8_16_16_seconds_after_each_ack() -> None:
    tracker = RolloutTracker(["L1", "L2"], version=0)
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
