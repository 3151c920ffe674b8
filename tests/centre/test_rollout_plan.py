"""The rollout's pure rules: wave arithmetic (hypothesis), the abort rule grammar, the window."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from centre.rollout import (
    REJECTED,
    SUCCEEDED,
    TIMED_OUT,
    PlanError,
    assign_waves,
    make_plan,
    parse_abort_rule,
    parse_waves,
    parse_window,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")

wave_lists = st.lists(st.integers(1, 100), min_size=1, max_size=6).map(sorted)


@given(
    st.lists(st.from_regex(r"gw-[a-z0-9]{1,6}", fullmatch=True), unique=True, max_size=60),
    st.integers(0, 10),
    wave_lists,
)
def test_every_gateway_in_exactly_one_wave_and_the_last_wave_ends_with_all(
    gateways: list[str], canary: int, shares: list[int]
) -> None:
    waves = assign_waves(gateways, canary, parse_waves(",".join(f"{s}%" for s in shares)))
    flat = [gw for wave in waves for gw in wave]
    assert sorted(flat) == sorted(gateways)  # each exactly once, none invented
    assert len(waves[0]) == min(canary, len(gateways))
    assert all(waves[1:])  # no empty wave after the canary
    rest = len(gateways) - len(waves[0])
    # independently: wave k ends where the k-th distinct non-zero cumulative share ends (ceil, in integers),
    # and the last wave ends with every gateway
    expected_ends = sorted(({min(rest, -(-rest * s // 100)) for s in shares} | {rest}) - {0})
    ends = []
    done = 0
    for wave in waves[1:]:
        done += len(wave)
        ends.append(done)
    assert ends == expected_ends


@given(st.lists(st.from_regex(r"[a-z]{1,8}", fullmatch=True), unique=True, min_size=1, max_size=30))
def test_the_choice_does_not_depend_on_the_order_given(gateways: list[str]) -> None:
    specs = parse_waves("10%,50%")
    assert assign_waves(gateways, 2, specs) == assign_waves(list(reversed(gateways)), 2, specs)


def test_worked_example_20_gateways() -> None:
    gateways = [f"gw{i:02d}" for i in range(20)]
    waves = assign_waves(gateways, 2, parse_waves("10%,50%,100%"))
    # 18 after the canary: ceil(1.8)=2, ceil(9)=9, 18
    assert [len(w) for w in waves] == [2, 2, 7, 9]
    waves = assign_waves(gateways, 0, parse_waves("5,20,100%"))
    assert [len(w) for w in waves] == [0, 5, 15]  # the count 20 is capped at the 20 there are
    assert [len(w) for w in assign_waves(gateways, 3, parse_waves("50%"))] == [3, 9, 8]  # the rest is implied


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("10%,x", "entry 2 ('x')"),
        ("50%,10%", "entry 2 (10%) is below entry 1 (50%)"),
        ("0%", "entry 1 (0%)"),
        ("150%", "entry 1 (150%)"),
        ("2.5", "whole number"),
    ],
)
def test_bad_waves_name_the_flag_and_the_entry(text: str, needle: str) -> None:
    with pytest.raises(PlanError) as caught:
        parse_waves(text)
    assert str(caught.value).startswith("--waves: ")
    assert needle in str(caught.value)


def counts(succeeded: int = 0, rejected: int = 0, timed_out: int = 0) -> dict[str, int]:
    return {SUCCEEDED: succeeded, REJECTED: rejected, TIMED_OUT: timed_out}


def test_abort_rule_counts_shares_and_after() -> None:
    rule = parse_abort_rule("rejected > 0 or timed_out > 10%")
    assert rule.fired(counts(succeeded=10)) is None
    reason = rule.fired(counts(succeeded=9, rejected=1))
    assert reason is not None and "rejected > 0" in reason and "rejected=1" in reason
    assert rule.fired(counts(succeeded=9, timed_out=1)) is None  # 1 of 10 = 10%, not above
    fired = rule.fired(counts(succeeded=8, timed_out=1))  # 1 of 9 = 11%
    assert fired is not None and "timed_out > 10%" in fired
    after = parse_abort_rule("failed >= 50% after 4")
    assert after.fired(counts(succeeded=1, rejected=2)) is None  # 3 finished, fewer than 4
    assert after.fired(counts(succeeded=2, rejected=1, timed_out=1)) is not None  # failed = 2 of 4
    both = parse_abort_rule("rejected > 0 and timed_out > 0 or failed >= 3")  # and binds tighter
    assert both.fired(counts(rejected=1)) is None
    assert both.fired(counts(rejected=1, timed_out=1)) is not None
    assert both.fired(counts(timed_out=3)) is not None
    assert parse_abort_rule("").fired(counts(rejected=5)) is None


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("rejectd > 0", "at character 1 of 'rejectd > 0': expected a state"),
        ("rejected = 0", "at character 10"),
        ("rejected > x", "expected a number"),
        ("rejected > 0 timed_out > 1", "at character 14"),
        ("rejected > 0 or", "at character 16"),
        ("failed > 120%", "above 100%"),
        ("failed > 1 after", "whole number"),
    ],
)
def test_bad_abort_rules_name_the_flag_and_the_position(text: str, needle: str) -> None:
    with pytest.raises(PlanError) as caught:
        parse_abort_rule(text)
    assert str(caught.value).startswith("--abort-if: ")
    assert needle in str(caught.value)


def at(hour: int, minute: int = 0) -> float:
    return dt.datetime(2026, 12, 5, hour, minute, tzinfo=SHANGHAI).timestamp()


def test_window_crossing_midnight_in_the_district_time_zone() -> None:
    window = parse_window("22:00-05:00")
    assert [window.contains(at(h)) for h in (21, 22, 23, 0, 4)] == [False, True, True, True, True]
    assert not window.contains(at(5)) and window.contains(at(4, 59))
    day = parse_window("09:30-10:00")
    assert day.contains(at(9, 30)) and not day.contains(at(10)) and not day.contains(at(22))
    # 22:00 in Shanghai is 14:00 UTC: the same instant, read in UTC, is outside a UTC window
    assert not parse_window("22:00-05:00", "UTC").contains(at(22))


@pytest.mark.parametrize(
    ("text", "needle"), [("22:00", "HH:MM-HH:MM"), ("24:00-05:00", "the start '24:00'"), ("1:00-1:00", "equal")]
)
def test_bad_windows(text: str, needle: str) -> None:
    with pytest.raises(PlanError, match=r"^--window: ") as caught:
        parse_window(text)
    assert needle in str(caught.value)


def test_plan_round_trips_and_checks_every_flag() -> None:
    plan = make_plan(canary=2, waves="10%,50%,100%", abort_if="rejected > 0", window="22:00-05:00", timeout="10m")
    assert plan.timeout == 600
    from centre.rollout import plan_from_json

    assert plan_from_json(plan.to_json()) == plan
    with pytest.raises(PlanError, match=r"^--canary: "):
        make_plan(canary=-1, waves="100%", abort_if="", window=None, timeout="1m")
    with pytest.raises(PlanError, match=r"^--timeout: "):
        make_plan(canary=0, waves="100%", abort_if="", window=None, timeout="soon")
    with pytest.raises(PlanError, match=r"^--tz: "):
        make_plan(canary=0, waves="100%", abort_if="", window="1:00-2:00", timeout="1m", tz="Mars/Base")
