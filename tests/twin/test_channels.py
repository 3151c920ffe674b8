"""The twin knows the channels: delivery through channels that fail, a tier's answer delay, and
the answer KPIs (raised -> acknowledged by a person) against closed forms.

Analytic checks drive the very ``Dispatcher`` the twin runs (the gateway's dispatch state
machine) with one responder, incidents far apart and no travel, so every notification is
answered or times out on its own.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import simpy

from edge_agent.errors import ConfigError
from twin.answer_kpis import answer_kpis
from twin.kpis import describe, higher_is_better, is_known_kpi
from twin.replication import run_replication
from twin.report import write_run_report
from twin.scenario import load_scenario
from twin.sim.dispatch import ChainSpec, Dispatcher, Incident, ResponderSpec
from twin.sim.reach import EVERY_CHANNEL_AT_ONCE, Channel, Delay, Reach, Tier, describe_channels, reach_from_scenario

ROLE = "doctor"


def run_calls(
    reach: Reach, n: int, ack_timeout_min: float, seed: int, starts: Mapping[str, float] = EVERY_CHANNEL_AT_ONCE
) -> dict[str, float]:
    """``n`` incidents 1000 minutes apart to one local responder by a chain whose channels start
    at ``starts`` (minutes); their answer KPIs."""
    env = simpy.Environment()
    rng = np.random.default_rng(seed)
    responders = [ResponderSpec(0.0, 0.0, ROLE, 30.0)]
    dispatcher = Dispatcher(
        env, responders, {"only": ChainSpec((ROLE,), ack_timeout_min, channels=starts)}, rng, reach=reach
    )
    incidents: list[Incident] = []

    def arrivals() -> Generator[simpy.Event, Any, None]:
        for _ in range(n):
            incident = Incident("sos", "village", 0.0, 0.0, "only", env.now, 0.01)
            incidents.append(incident)
            env.process(dispatcher.respond(incident))
            yield env.timeout(1000.0)

    env.process(arrivals())
    env.run()
    return answer_kpis(incidents, responders)


def within_sum_of_exponentials(t: float, a: float, b: float) -> float:
    """P(X + Y <= t) for independent exponentials of means a != b (hypoexponential CDF)."""
    return 1.0 - (a * math.exp(-t / a) - b * math.exp(-t / b)) / (a - b)


def test_share_answered_within_matches_two_exponentials() -> None:
    n = 20_000
    answer_min, delivery_min = 0.5, 0.25  # means: 30 s to answer, 15 s to deliver
    sms = Channel("sms", Delay(mean=delivery_min))
    kpis = run_calls(Reach(default=Tier(1.0, Delay(mean=answer_min), (sms,))), n, 1e6, seed=3)
    for limit in (60, 180):
        expected = within_sum_of_exponentials(limit / 60.0, answer_min, delivery_min)
        tolerance = 4 * math.sqrt(expected * (1 - expected) / n)
        for name in (f"ack_within_{limit}s", f"ack_within_{limit}s_{ROLE}"):
            assert kpis[name] == pytest.approx(expected, abs=tolerance), name
    # the median of the sum solves CDF(t) = 0.5 (bisection)
    lo, hi = 0.0, 10.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if within_sum_of_exponentials(mid, answer_min, delivery_min) < 0.5 else (lo, mid)
    assert kpis[f"ack_p50_s_{ROLE}"] == pytest.approx(lo * 60.0, rel=0.03)


def test_every_channel_failed_is_never_answered_and_a_last_step_waits_for_its_timeout() -> None:
    n = 20_000
    six_seconds = Delay(median=0.1, sigma=0.0)
    channels = (Channel("sms", six_seconds, failure=0.3), Channel("ring", six_seconds, failure=0.5))
    starts = {"sms": 0.0, "ring": 50 / 60}  # the policy: SMS at once, ring after 50 s if still unanswered
    kpis = run_calls(Reach(default=Tier(1.0, Delay(), channels)), n, ack_timeout_min=2.0, seed=5, starts=starts)
    sms, ring, lost = 0.7, 0.3 * 0.5, 0.3 * 0.5  # reached at 6 s, at 56 s, never (known at 56 s)
    tolerance = 4 * math.sqrt(lost * (1 - lost) / n)
    # per notification: answered at 6 s or 56 s unless every channel failed
    assert kpis[f"ack_within_60s_{ROLE}"] == pytest.approx(sms + ring, abs=tolerance)
    assert kpis[f"ack_within_180s_{ROLE}"] == pytest.approx(sms + ring, abs=tolerance)
    assert kpis[f"ack_p90_s_{ROLE}"] == pytest.approx(56.0)
    # per alert: the chain has one role, so each call is its last step: a lost notification is
    # called again at the 2-minute ack timeout, not at once (with nobody reachable, "at once"
    # would go round without end: DispatchState.unreachable), answering at 126 s or 176 s
    within_180 = (sms + ring) * (1 + lost)
    assert kpis["ack_within_60s"] == pytest.approx(sms + ring, abs=tolerance)
    assert kpis["ack_within_180s"] == pytest.approx(within_180, abs=4 * math.sqrt(within_180 * (1 - within_180) / n))


def test_routes_wait_for_the_uplink_and_the_earliest_delivery_counts() -> None:
    def seconds(s: float) -> Delay:
        return Delay(median=s / 60.0, sigma=0.0)

    def reached(local: bool, sms_fails: bool = False, all_fail: bool = False) -> float | None:
        channels = (
            Channel("app", seconds(0.5), 1.0 if all_fail else 0.0, "lan"),
            Channel("sms", seconds(10.0), 1.0 if sms_fails or all_fail else 0.0, "cellular"),
            Channel("push", seconds(1.0), 1.0 if all_fail else 0.0, "internet"),
        )
        reach = Reach({ROLE: Tier(1.0, Delay(), channels)})
        delay = reach.outcome(ROLE, EVERY_CHANNEL_AT_ONCE, local, lambda _start: 5.0, np.random.default_rng(0)).ack
        return None if delay is None else round(delay * 60.0, 6)

    assert reached(local=True) == 0.5  # the app on the village LAN
    assert reached(local=False) == 10.0  # off the LAN, uplink down 5 min: the modem's SMS first
    assert reached(local=False, sms_fails=True) == 300.5  # then the app through the centre
    assert reached(local=True, all_fail=True) is None


def test_answer_kpi_names() -> None:
    for name in ("ack_p50_s", "ack_p90_s_village_doctor", "ack_within_60s", "ack_within_180s_grid_worker"):
        assert is_known_kpi(name), name
    assert higher_is_better("ack_within_60s_village_doctor")
    assert not higher_is_better("ack_p90_s")
    assert "97.5%" in describe("ack_within_60s_village_doctor")
    assert not is_known_kpi("ack_within_90s")


# Dispatch KPIs of the tiny scenario (no channels) at seed 11, recorded before channels existed.
BEFORE_CHANNELS = {
    "energy_kwh": 43.68915,
    "outage_lamp_hours": 24.303419540648566,
    "incidents": 22.0,
    "escalations": 9.0,
    "queue_wait_min_mean": 5.202497092951925,
    "sos_p90_min": 3.701881785483465,
    "lamp_outage_p90_min": 476.62373356971284,
    "repair_hours_mean": 4.050569923441428,
    "utilisation_village_doctor": 0.0254524612918896,
    "utilisation_repair_crew": 0.056908420151803384,
    "gateway_msgs_per_s_mean": 0.6936631944444445,
}


def test_a_scenario_without_channels_gives_the_same_kpis(tiny_scenario: Path) -> None:
    kpis = run_replication(str(tiny_scenario), None, 11, None)["kpis"]
    assert {name: kpis[name] for name in BEFORE_CHANNELS} == pytest.approx(BEFORE_CHANNELS, rel=1e-9)
    assert 0 < kpis["ack_within_60s_village_doctor"] <= 1


CHANNELS = """
[channels.app]
median_seconds = 0.3
p90_seconds = 1
failure = 0.05

[channels.sms]
median_seconds = 5
p90_seconds = 30
failure = 0.02

[channels.push]
median_seconds = 2
p90_seconds = 8
failure = 0.03

[channels.ring]
median_seconds = 12
p90_seconds = 20
failure = 0.05

[dispatch.answer.village_doctor]
median_seconds = 20
p90_seconds = 60
probability = 0.95
channels = ["sms"]
"""


def test_channels_reach_the_dispatcher_and_the_report(tiny_scenario: Path, tmp_path: Path) -> None:
    tiny_scenario.write_text(tiny_scenario.read_text() + CHANNELS)
    reach = reach_from_scenario(load_scenario(tiny_scenario).spec)
    doctor = reach.tier("village_doctor")
    assert [c.name for c in doctor.channels] == ["sms"]
    assert doctor.probability == 0.95
    assert doctor.delay.median * 60 == pytest.approx(20.0)
    assert doctor.delay.median * math.exp(1.2815515655446004 * doctor.delay.sigma) * 60 == pytest.approx(60.0)
    assert [c.name for c in reach.tier("township_doctor").channels] == ["app", "sms", "push", "ring"]
    assert reach.tier("township_doctor").delay == Delay(mean=0.5)  # the dispatch default
    results = [run_replication(str(tiny_scenario), None, seed, None) for seed in (1, 2)]
    loaded = load_scenario(tiny_scenario)
    channels = describe_channels(loaded.spec, loaded.policy)
    # the policy's medical chain: app, sms, push, ring after 45 s; the village doctor has only the SMS
    assert channels["village_doctor"] == "medical: sms"
    assert channels["township_doctor"] == "medical: app, sms, push, ring after 45 s"
    meta = {"scenario": "tiny", "policy": "standard", "replications": 2, "days": 4, "seed": 1, "channels": channels}
    write_run_report(tmp_path / "out", meta, results)
    page = (tmp_path / "out" / "report.html").read_text()
    assert "medical: app, sms, push, ring after 45 s" in page
    assert "Answered by a person" in page
    assert "village_doctor" in page
    assert "97.5%" in page and "99.0%" in page
    assert (tmp_path / "out" / "answered.png").stat().st_size > 0


BAD = """
[channels.sms]
median_seconds = 5
p90_seconds = 2

[channels.fax]
mean_seconds = 3

[channels.ring]
median_s = 3

[channels.push]
mean_seconds = 2
median_seconds = 1
p90_seconds = 2

[channels.app]
median_seconds = 1
failure = 1.5

[dispatch.answer.surgeon]
mean_seconds = 30

[dispatch.answer.village_doctor]
median_seconds = 20
channels = ["sms", "pager"]
"""


def test_channel_and_answer_problems_name_their_key_paths(tiny_scenario: Path) -> None:
    tiny_scenario.write_text(tiny_scenario.read_text() + BAD)
    with pytest.raises(ConfigError) as info:
        load_scenario(tiny_scenario)
    problems = {p.path: p.message for p in info.value.problems}
    assert set(problems) == {
        "channels.sms.p90_seconds",
        "channels.fax",
        "channels.ring.median_s",
        "channels.push",
        "channels.app.failure",
        "dispatch.answer.surgeon",
        "dispatch.answer.village_doctor.p90_seconds",
        "dispatch.answer.village_doctor.channels[1]",
    }
    assert "below median_seconds" in problems["channels.sms.p90_seconds"]
    assert "'app', 'push', 'ring', 'sms'" in problems["channels.fax"]
    assert "not both" in problems["channels.push"]
    assert "declare [channels.pager]" in problems["dispatch.answer.village_doctor.channels[1]"]
    assert "village_doctor" in problems["dispatch.answer.surgeon"]


def test_a_channel_the_policy_uses_must_be_declared_once_any_is(tiny_scenario: Path) -> None:
    """The policy's medical chain notifies by app, sms, push and ring (ring after 45 s); a
    scenario declaring only the SMS would model the others as perfect: refused, by name."""
    sms_only = "\n[channels.sms]\nmedian_seconds = 5\np90_seconds = 30\n"
    tiny_scenario.write_text(
        tiny_scenario.read_text() + sms_only + '[dispatch.answer.village_doctor]\nchannels = ["sms"]\n'
    )
    with pytest.raises(ConfigError) as info:
        load_scenario(tiny_scenario)
    problems = {p.path: p.message for p in info.value.problems}
    assert set(problems) == {"channels.app", "channels.push", "channels.ring"}
    assert "chain 'medical'" in problems["channels.ring"] and "declare [channels.ring]" in problems["channels.ring"]


def test_a_tier_left_without_any_channel_of_its_chain_is_a_problem(tiny_scenario: Path) -> None:
    tiny_scenario.write_text(tiny_scenario.read_text() + CHANNELS.replace('channels = ["sms"]', 'channels = ["push"]'))
    load_scenario(tiny_scenario)  # the medical chain has push
    maintenance = '\n[dispatch.answer.grid_worker]\nchannels = ["ring"]\n'  # the maintenance chain: app, sms
    tiny_scenario.write_text(tiny_scenario.read_text() + maintenance)
    with pytest.raises(ConfigError) as info:
        load_scenario(tiny_scenario)
    [problem] = info.value.problems
    assert problem.path == "dispatch.answer.grid_worker.channels"
    assert "'maintenance'" in problem.message and "never be reached" in problem.message
