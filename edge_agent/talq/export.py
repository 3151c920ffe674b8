"""Policy -> TALQ 2.7.1: calendars, control programs and calendar groups (docs/TALQ.md).

Owns: ``export_talq``. Each lighting program becomes a ``ControlProgramOne`` (an astro-clock or
absolute active period for switching, fixed-time controls for the base level and the dimming
steps, a sensor-driven ``DynamicControl`` for the motion boost); each ``[assign]`` entry a
``Calendar`` (id = the lamp group) whose default program is the assigned one, plus a ``Group``
with purpose ``calendar``. What TALQ cannot hold (rules, responder chains, civil twilight,
fractional-minute offsets, ...) is returned by name in ``unsupported``, never dropped silently.
"""

from __future__ import annotations

from typing import Any

from edge_agent.policy.lighting import night_minute
from edge_agent.policy.model import EventTrigger, Policy, Program, Rule, SetLamp
from edge_agent.policy.programs import compile_program
from edge_agent.policy.sun import ZENITH_CIVIL, ZENITH_OFFICIAL, sun_event_minute
from edge_agent.policy.units import parse_clock
from edge_agent.talq.common import (
    DEFAULT_OWNER_CMS,
    NOON,
    SWITCH_CIVIL,
    SWITCH_CLOCK,
    TALQ_VERSION,
    Site,
    Switching,
    clock_text,
    hhmm,
    switch_on_divergence,
)

_TWILIGHT_GUESS = 28  # minutes between sunset and civil dusk when no site is given (mid-latitudes)


def level_command(level: float) -> dict[str, Any]:
    return {"state": {"name": "LevelState", "value": round(level)}}


def export_talq(
    policy: Policy,
    *,
    site: Site | None = None,
    owner_cms: str = DEFAULT_OWNER_CMS,
) -> tuple[dict[str, Any], list[str]]:
    """The policy's lighting as a TALQ document, and what TALQ cannot express (``path: why``).

    ``site`` lets the exporter check, over a year, the few cases that depend on the sun (a
    dimming step that could come before a sun-based switch-on); without it they are reported
    conservatively.
    """
    unsupported: list[str] = []
    programs = [
        _program(name, program, site, owner_cms, unsupported) for name, program in sorted(policy.programs.items())
    ]
    calendars: list[dict[str, Any]] = []
    groups: list[dict[str, Any]] = []
    for group, program_name in sorted(policy.assign.items()):
        calendars.append(
            {
                "id": group,
                "ownerCMS": owner_cms,
                "rules": [{"program": program_name}],
                "defaultProgram": program_name,
            }
        )
        groups.append({"address": group, "ownerCMS": owner_cms, "members": [], "purpose": "calendar"})
    for name, chain in sorted(policy.chains.items()):
        unsupported.append(
            f"chains.{name}: responder chain ({' -> '.join(chain.roles)}, ack {chain.ack_timeout}): "
            "TALQ has no alert escalation"
        )
    for rule in policy.rules:
        why = "TALQ has no event rules"
        if any(isinstance(action, SetLamp) for action in rule.then):
            why = "a rule-driven lamp override; TALQ calendars only pick a group's program by date or weekday"
        unsupported.append(f"rules.{rule.id}: {_rule_summary(rule)}: {why}")
    document: dict[str, Any] = {
        "talqVersion": TALQ_VERSION,
        "source": {"policy": policy.policy.name, "description": policy.policy.description},
        "controlPrograms": programs,
        "calendars": calendars,
        "groups": groups,
    }
    return document, unsupported


def _rule_summary(rule: Rule) -> str:
    when = rule.when
    trigger = type(when).__struct_config__.tag
    if isinstance(when, EventTrigger):
        events = when.event if isinstance(when.event, str) else ", ".join(when.event)
        trigger = f"{trigger} ({events})"
    actions = ", ".join(str(type(action).__struct_config__.tag) for action in rule.then)
    return f"{trigger} rule -> {actions}"


def _offset(name: str, key: str, kind: int, value: float, site: Site | None, lost: list[str]) -> int:
    """A whole-minute TALQ offset from sunset/sunrise for our sun or civil-twilight switch."""
    evening = key == "on"
    if kind == SWITCH_CIVIL:
        gap = _twilight_gap(site, evening)
        where = f"the mean at {site.latitude:g}, {site.longitude:g}" if site else "a mid-latitude guess"
        event = "dusk" if evening else "dawn"
        lost.append(
            f"programs.{name}.{key}: civil {event} is not a TALQ solar event (only sunrise/sunset); "
            f"exported as {'sunset' if evening else 'sunrise'}{value + gap:+g}m ({where})"
        )
        value += gap
    minutes = round(value)
    if minutes != value:
        lost.append(f"programs.{name}.{key}: offset {value:g} min is not whole minutes; TALQ offsets are integers")
    return minutes


def _twilight_gap(site: Site | None, evening: bool) -> int:
    """Minutes from sunset to civil dusk (evening) or from civil dawn to sunrise, negative in the morning."""
    if site is None:
        return _TWILIGHT_GUESS if evening else -_TWILIGHT_GUESS
    gaps: list[float] = []
    for day, offset in site.nights():
        sun = sun_event_minute(day, site.latitude, site.longitude, offset, ZENITH_OFFICIAL, not evening)
        civil = sun_event_minute(day, site.latitude, site.longitude, offset, ZENITH_CIVIL, not evening)
        if sun == sun and civil == civil:  # neither NaN
            gaps.append(civil - sun)
    return round(sum(gaps) / len(gaps)) if gaps else (_TWILIGHT_GUESS if evening else -_TWILIGHT_GUESS)


def _program(name: str, program: Program, site: Site | None, owner: str, lost: list[str]) -> dict[str, Any]:
    compiled = compile_program(name, program)
    on_kind, on_value, off_kind, off_value = compiled.on_kind, compiled.on_value, compiled.off_kind, compiled.off_value
    base = compiled.base_level
    # Live steps, in night order: a later step at the same minute wins, so keep only that one.
    by_minute: dict[int, float] = {}
    for at, level in zip(compiled.step_minutes, compiled.step_levels, strict=True):
        by_minute.pop(int(at), None)
        by_minute[int(at)] = level
    steps = sorted(by_minute.items(), key=lambda step: night_minute(step[0]))
    if on_kind == SWITCH_CLOCK:  # steps before a clock switch-on never take effect: leave them out
        steps = [s for s in steps if night_minute(s[0]) >= night_minute(on_value)]
    if off_kind == SWITCH_CLOCK:  # nor do steps at or after a clock switch-off
        steps = [s for s in steps if night_minute(s[0]) < night_minute(off_value)]
    controls: dict[int, float] = {}  # clock minute -> level: TALQ fixed-time controls
    periods: list[dict[str, Any]]
    if on_kind == SWITCH_CLOCK and off_kind == SWITCH_CLOCK:
        periods = [
            {
                "name": "AbsoluteActivePeriod",
                "startTime": clock_text(int(on_value)),
                "endTime": clock_text(int(off_value)),
            }
        ]
        if night_minute(on_value) >= night_minute(off_value):
            lost.append(
                f"programs.{name}: on {program.on} / off {program.off} never lights in our model (the window "
                "crosses noon or is empty); exported at level 0"
            )
            base, steps = 0.0, []
        controls[NOON] = base
    elif on_kind == SWITCH_CLOCK or off_kind == SWITCH_CLOCK:
        sunset = 0 if on_kind == SWITCH_CLOCK else _offset(name, "on", on_kind, on_value, site, lost)
        sunrise = 0 if off_kind == SWITCH_CLOCK else _offset(name, "off", off_kind, off_value, site, lost)
        periods = [{"name": "AstroClockActivePeriod", "sunsetOffset": sunset, "sunriseOffset": sunrise}]
        clock_key = "on" if on_kind == SWITCH_CLOCK else "off"
        lost.append(
            f"programs.{name}.{clock_key}: TALQ active periods switch both ways by the sun or both by the clock; "
            f"the clock {clock_key} {getattr(program, clock_key)} is a fixed-time control inside a sunset-to-sunrise "
            "period, exact only on nights when it falls inside that period"
        )
        if on_kind == SWITCH_CLOCK:
            controls[NOON] = 0.0
            controls[int(on_value)] = base
        else:
            controls[NOON] = base
            controls[int(off_value)] = 0.0
    else:
        periods = [
            {
                "name": "AstroClockActivePeriod",
                "sunsetOffset": _offset(name, "on", on_kind, on_value, site, lost),
                "sunriseOffset": _offset(name, "off", off_kind, off_value, site, lost),
            }
        ]
        controls[NOON] = base
    for at, level in steps:
        if at == NOON and controls.get(NOON) != level and not (on_kind == SWITCH_CLOCK and on_value == NOON):
            lost.append(f"programs.{name}.level: a step at 12:00 takes the control that holds the base level")
        controls[at] = level
    if on_kind != SWITCH_CLOCK:
        switching = Switching(on_kind, on_value, off_kind, off_value, base, tuple(steps))
        for index, why in switch_on_divergence(switching, site):
            if index < 0:
                lost.append(f"programs.{name}.on: {why}")
                continue
            at = steps[index][0]
            original = max(i for i, step in enumerate(program.steps) if parse_clock(step.at) == at)
            lost.append(f"programs.{name}.steps[{original}] ({hhmm(at)}): {why}")
    dynamic: list[dict[str, Any]] = []
    if program.boost is not None:
        dynamic.append(
            {
                "effect": {
                    "type": "FixedControlEffect",
                    "source": {"sensor": {"sensorAddresses": []}},
                    "operation": "Max",
                    "holdTime": float(program.boost.minutes) * 60.0,
                    "command": level_command(program.boost.level),
                }
            }
        )
        if base == 0 or any(level == 0 for _, level in steps):
            lost.append(
                f"programs.{name}.boost: our boost never lights a lamp its program holds at 0; "
                "TALQ's Max effect would lift it to the boost level"
            )
    return {
        "type": "ControlProgramOne",
        "id": name,
        "ownerCMS": owner,
        "activePeriods": periods,
        "fixedTimeControls": [
            {"startTime": clock_text(at), "command": level_command(level)} for at, level in sorted(controls.items())
        ],
        "astroClockTimeControls": [],
        "dynamicControls": dynamic,
    }


__all__ = ["export_talq", "level_command"]
