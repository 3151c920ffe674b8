"""KPI names: the vocabulary shared by reports, gates and comparisons.

Owns: which KPI names exist and which direction is better for each. Pure, tiny.
Must not import: numba, simpy, anything of the twin but itself.
"""

from __future__ import annotations

import re

FIXED = {
    # name: (higher is better, description)
    "energy_kwh": (False, "energy drawn by all lamps, standby included"),
    "baseline_kwh": (False, "energy if every lamp ran at 100% whenever its program is on"),
    "energy_saving": (True, "1 - energy / baseline"),
    "dark_hours_lit": (True, "share of civil-dark lamp-minutes with the lamp lit"),
    "outage_lamp_hours": (False, "lamp-hours spent failed (day and night)"),
    "outage_dark_lamp_hours": (False, "civil-dark lamp-hours a failed lamp left unlit"),
    "lamp_failures": (False, "lamp or driver failures"),
    "repair_hours_mean": (False, "mean hours from failure to the lamp lit again"),
    "repair_hours_p90": (False, "90th percentile hours from failure to restored"),
    "motion_boosts_per_lamp_night": (False, "motion arrivals seen per lamp and night"),
    "incidents": (False, "incidents counted (after warm-up)"),
    "escalations": (False, "escalations to a next responder (no ack or none available)"),
    "queue_wait_min_mean": (False, "mean minutes from notification to a responder assigned"),
    "within_target_town": (True, "share of town medical incidents reached within target"),
    "within_target_village": (True, "share of village medical incidents reached within target"),
    "gateway_msgs_per_s_mean": (False, "north-bound messages per second, whole district"),
    "gateway_msgs_per_min_peak": (False, "busiest gateway-minute of north-bound messages"),
    "uplink_backlog_max": (False, "largest backlog a gateway flushed after an uplink outage"),
}

RESPONSE = re.compile(r"^(?P<type>[a-z_]+?)(?:_(?P<area>town|village))?_p(?P<q>50|90|95)_min$")
UTILISATION = re.compile(r"^utilisation_(?P<role>[A-Za-z0-9_.\-]+)$")
ANSWER = re.compile(
    r"^ack_(?:p(?P<q>50|90)_s|within_(?P<limit>60|180)s)(?:_(?P<role>[A-Za-z0-9_.\-]+))?$"
)  # twin.answer_kpis

# Telecare answer targets (UK, TSA / TEC Quality): share of alarm calls answered within seconds.
ANSWER_TARGETS = {60: 0.975, 180: 0.99}


def is_known_kpi(name: str) -> bool:
    return name in FIXED or any(p.match(name) for p in (RESPONSE, UTILISATION, ANSWER))


def higher_is_better(name: str) -> bool:
    if name in FIXED:
        return FIXED[name][0]
    # Shares answered within a limit: higher; response and answer times, utilisation: lower.
    m = ANSWER.match(name)
    return bool(m and m["limit"])


def describe(name: str) -> str:
    if name in FIXED:
        return FIXED[name][1]
    m = RESPONSE.match(name)
    if m:
        where = f" in {m['area']}" if m["area"] else ""
        return f"{m['q']}th percentile minutes from {m['type']} to a responder on scene{where}"
    m = UTILISATION.match(name)
    if m:
        return f"share of on-shift time {m['role']} responders are busy"
    m = ANSWER.match(name)
    if m:
        if m["role"]:
            what = f"of notifications to {m['role']}"
            span = "notification -> acknowledged by that person"
        else:
            what, span = "of alerts", "raised -> acknowledged by a person"
        if m["q"]:
            answered = " answered" if m["role"] else ""
            return f"{m['q']}th percentile seconds {span} ({what}{answered})"
        target = ANSWER_TARGETS[int(m["limit"])]
        return f"share {what} with {span} within {m['limit']} s (telecare target {target:.1%})"
    return ""
