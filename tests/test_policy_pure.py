"""The pure policy code: condition language, durations, lighting decisions, responder choice."""

from __future__ import annotations

import datetime as dt
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.policy.dispatch import choose_responder, travel_minutes
from edge_agent.policy.expr import ExpressionError, compile_condition, evaluate
from edge_agent.policy.lighting import lamp_level, lamp_power_w, program_level
from edge_agent.policy.model import parse_policy
from edge_agent.policy.programs import compile_program, compile_programs
from edge_agent.policy.units import parse_clock, parse_duration, parse_signed_duration

NAMES = {"heart_rate", "battery", "zone", "is_dark"}


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("heart_rate > 120 and battery >= 10", {"heart_rate": 130, "battery": 50}, True),
        ("heart_rate > 120 and battery >= 10", {"heart_rate": 130, "battery": 5}, False),
        ("zone in ('north', 'east') and not is_dark", {"zone": "east", "is_dark": False}, True),
        ("zone not in ['north']", {"zone": "north"}, False),
        ("60 < heart_rate < 100", {"heart_rate": 72}, True),
        ("heart_rate * 2 - 10 == battery % 7 + 133", {"heart_rate": 70, "battery": 0}, False),
        ("-heart_rate < 0 or battery / 2 > 100", {"heart_rate": 1, "battery": 1}, True),
    ],
)
def test_conditions_evaluate(text: str, env: dict, expected: bool) -> None:
    assert evaluate(compile_condition(text, NAMES), env) == (expected, None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("__import__('os').system('x')", "Call is not allowed"),
        ("battery.real > 1", "Attribute is not allowed"),
        ("zone[0] == 'n'", "Subscript is not allowed"),
        ("[x for x in zone]", "ListComp is not allowed"),
        ("lambda: 1", "Lambda is not allowed"),
        ("hart_rate > 1", "did you mean 'heart_rate'"),
        ("battery >", "syntax error"),
        ("battery ** 2 > 1", "Pow is not allowed"),
        (" or ".join(["battery > 1"] * 30), "too complex"),
        ("battery > 1" + " " * 600, "longer than"),
        ("zone in (battery, 1)", "only literal values"),
    ],
)
def test_unsafe_or_wrong_conditions_are_refused_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(ExpressionError, match=message.replace("(", r"\(").replace("*", r"\*")):
        compile_condition(text, NAMES)


def test_missing_value_and_type_errors_make_a_condition_false_with_a_reason() -> None:
    assert evaluate(compile_condition("battery < 15", NAMES), {}) == (False, "missing value 'battery'")
    result, reason = evaluate(compile_condition("battery < 15", NAMES), {"battery": "low"})
    assert result is False and reason is not None and reason.startswith("TypeError")


@given(st.text(max_size=80))
def test_any_text_either_compiles_or_raises_expression_error(text: str) -> None:
    try:
        condition = compile_condition(text, NAMES)
    except ExpressionError:
        return
    evaluate(condition, {"heart_rate": 1, "battery": 2, "zone": "a", "is_dark": True})


def test_durations_and_clock_times() -> None:
    assert parse_duration("90s") == 90 and parse_duration("5m") == 300 and parse_duration("1h30m") == 5400
    assert parse_duration(12) == 12 and parse_signed_duration("-15m") == -900
    assert parse_clock("00:00") == 0 and parse_clock("23:59") == 1439
    for bad in ("5 min", "", "m", "-5m"):
        with pytest.raises(ValueError, match="duration"):
            parse_duration(bad)
    with pytest.raises(ValueError, match="range"):
        parse_clock("24:00")


def _policy():
    with open("scenarios/policies/naxi-standard.toml", "rb") as f:
        return parse_policy(f.read(), "naxi-standard.toml")


def test_town_program_gives_the_field_profile_through_a_night() -> None:
    """docs/DOMAIN.md#lighting: 100% at dusk, 80% evening, 50% after midnight, off in daylight."""
    town = compile_programs(_policy())["town"]
    day = (dt.date(2026, 11, 26) - dt.date(1970, 1, 1)).days
    at = lambda h, m=0, d=day: town.level_at(d if h >= 12 else d + 1, h * 60 + m, 28.77, 105.37, 480)  # noqa: E731
    assert at(15) == 0 and at(18, 30) == 100 and at(21, 29) == 100 and at(21, 30) == 80
    assert at(0, 0) == 50 and at(3) == 50 and at(5, 30) == 80 and at(9) == 0
    assert town.level_at(day, 19 * 60, 28.77, 105.37, 480, boost_active=True) == 100
    assert town.level_at(day, 23 * 60, 28.77, 105.37, 480, boost_active=True) == 100
    assert town.level_at(day, 13 * 60, 28.77, 105.37, 480, boost_active=True) == 0, "no boost by day"
    assert town.level_at(day, 13 * 60, 28.77, 105.37, 480, override_level=40) == 40


def test_steps_are_ordered_through_midnight_and_clock_switching_works() -> None:
    from edge_agent.policy.model import Program, Step

    program = compile_program(
        "p", Program(on="18:00", off="06:00", level=90, steps=[Step("01:00", 20), Step("23:00", 60)])
    )
    assert program.step_minutes == (23 * 60, 60)
    levels = [
        program_level(m, 1080, 360, 90, program.step_minutes, program.step_levels, 2)
        for m in (1079, 1080, 1379, 1380, 59, 60, 359, 360)
    ]
    assert levels == [0, 90, 90, 60, 60, 20, 20, 0]


def test_lamp_level_and_power() -> None:
    assert lamp_level(50, True, 100, -1) == 100 and lamp_level(0, True, 100, -1) == 0
    assert lamp_level(50, False, 100, 30) == 30 and lamp_level(50, False, 100, 150) == 100
    assert lamp_power_w(0, 100, 1.5) == 1.5 and lamp_power_w(50, 100, 1.5) == 51.5


def test_choose_responder_takes_the_nearest_available_of_the_step() -> None:
    xs, ys = (0.0, 100.0, 10.0, 5.0), (0.0, 0.0, 0.0, 0.0)
    ranks = (0, 0, 0, 1)
    assert choose_responder(90, 0, xs, ys, (True, True, True, True), ranks, 4, 0) == 1
    assert choose_responder(90, 0, xs, ys, (True, False, True, True), ranks, 4, 0) == 2
    assert choose_responder(90, 0, xs, ys, (False, False, False, True), ranks, 4, 0) == -1
    assert choose_responder(90, 0, xs, ys, (False, False, False, True), ranks, 4, 1) == 3
    assert math.isclose(travel_minutes(1000, 30, 1.3), 2.6)


def test_sun_events_match_astral_within_a_minute_over_a_year() -> None:
    from zoneinfo import ZoneInfo

    from astral import LocationInfo
    from astral.sun import sun

    from edge_agent.policy.sun import ZENITH_CIVIL, ZENITH_OFFICIAL, sun_event_minute

    tz = ZoneInfo("Asia/Shanghai")
    observer = LocationInfo("Naxi", "CN", "Asia/Shanghai", 28.77, 105.37).observer
    worst = 0.0
    for offset in range(0, 365, 3):
        day = dt.date(2026, 1, 1) + dt.timedelta(days=offset)
        events = sun(observer, date=day, tzinfo=tz)
        epoch_day = (day - dt.date(1970, 1, 1)).days
        midnight = dt.datetime.combine(day, dt.time(), tz)
        for key, zenith, rising in (
            ("sunrise", ZENITH_OFFICIAL, True),
            ("sunset", ZENITH_OFFICIAL, False),
            ("dawn", ZENITH_CIVIL, True),
            ("dusk", ZENITH_CIVIL, False),
        ):
            reference = (events[key] - midnight).total_seconds() / 60
            worst = max(worst, abs(reference - sun_event_minute(epoch_day, 28.77, 105.37, 480, zenith, rising)))
    assert worst < 1.0
