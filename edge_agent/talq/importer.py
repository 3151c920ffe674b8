"""TALQ 2.7.1 -> policy: control programs and calendars back into ``[programs]`` and ``[assign]``.

Owns: ``import_talq`` (a TALQ document -> a validated ``Policy`` and what it could not carry
over, each by JSON path) and ``policy_toml`` (a policy's lighting as policy-file text). A
malformed document raises ``TalqError`` naming the JSON path of the bad value; a well-formed one
that uses TALQ features our programs do not have (date-based calendar rules, sensor active
periods, ramps, ...) imports with those features listed in ``unsupported``. docs/TALQ.md.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from edge_agent.errors import ConfigError
from edge_agent.policy.lighting import night_minute
from edge_agent.policy.model import Policy, parse_policy
from edge_agent.policy.units import parse_clock
from edge_agent.talq.common import (
    NOON,
    SWITCH_CLOCK,
    SWITCH_SUN,
    TALQ_VERSION,
    Site,
    Switching,
    TalqError,
    earliest_switch_on,
    hhmm,
    parse_time,
    switch_on_divergence,
    switch_text,
)

_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


@dataclass(slots=True)
class _Program:
    on: str
    off: str
    level: int
    steps: list[tuple[int, int]]  # (clock minute, level), night order
    boost: tuple[int, float] | None  # (level, minutes)


# ----- typed reads that name the JSON path of what is wrong ------------------------------------
def _obj(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TalqError(path, f"expected an object, got {type(value).__name__}")
    return value


def _list(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise TalqError(path, f"expected an array, got {type(value).__name__}")
    return value


def _field(obj: dict[str, Any], key: str, path: str) -> Any:
    if key not in obj:
        raise TalqError(f"{path}.{key}", "missing required property")
    return obj[key]


def _str(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise TalqError(path, f"expected a string, got {type(value).__name__}")
    return value


def _name(value: Any, path: str) -> str:
    text = _str(value, path)
    if not _NAME.match(text):
        raise TalqError(path, f"{text!r} is not usable as a policy name (letters, digits, '_', '.', '-'; 1-64)")
    return text


def _int(value: Any, path: str, low: int | None = None, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TalqError(path, f"expected an integer, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise TalqError(path, f"expected an integer in {low}..{high}, got {value}")
    return value


def _number(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TalqError(path, f"expected a number, got {value!r}")
    return float(value)


def _level(command: Any, path: str, lost: list[str]) -> int:
    """A command's LevelState value 0-100; ramps are reported (our lamps step)."""
    body = _obj(command, path)
    state = _obj(_field(body, "state", path), f"{path}.state")
    kind = _str(_field(state, "name", f"{path}.state"), f"{path}.state.name")
    if kind != "LevelState":
        raise TalqError(f"{path}.state.name", f"expected 'LevelState' for a lamp level, got {kind!r}")
    level = _int(_field(state, "value", f"{path}.state"), f"{path}.state.value", 0, 100)
    for ramp in ("rampToLevelTime", "rampFromLevelTime"):
        if ramp in body and _number(body[ramp], f"{path}.{ramp}") != 0:
            lost.append(f"{path}.{ramp}: ramps are not in our programs (lamps step to a level); ignored")
    return level


# ----- the import ------------------------------------------------------------------------------
def import_talq(
    document: Any,
    *,
    site: Site | None = None,
    name: str | None = None,
) -> tuple[Policy, list[str]]:
    """A TALQ document (as exported by ``export_talq`` or by another CMS) -> (policy, unsupported)."""
    root = _obj(document, "$")
    lost: list[str] = []
    version = root.get("talqVersion", TALQ_VERSION)
    if version != TALQ_VERSION:
        lost.append(f"$.talqVersion: document says {version!r}; read as TALQ {TALQ_VERSION}")
    programs: dict[str, _Program] = {}
    skipped: set[str] = set()
    for i, raw in enumerate(_list(_field(root, "controlPrograms", "$"), "$.controlPrograms")):
        path = f"$.controlPrograms[{i}]"
        body = _obj(raw, path)
        program_id = _name(_field(body, "id", path), f"{path}.id")
        kind = _str(_field(body, "type", path), f"{path}.type")
        if program_id in programs or program_id in skipped:
            raise TalqError(f"{path}.id", f"duplicate control program id {program_id!r}")
        if kind != "ControlProgramOne":
            lost.append(f"{path}: control program type {kind!r} is not a lighting program we read; skipped")
            skipped.add(program_id)
            continue
        programs[program_id] = _program(body, path, site, lost)
    if not programs:
        raise TalqError("$.controlPrograms", "no ControlProgramOne to import")
    assign = _calendars(root, programs, skipped, lost)
    for i, raw in enumerate(_list(root.get("groups", []), "$.groups")):
        group = _obj(raw, f"$.groups[{i}]")
        if _list(group.get("members", []), f"$.groups[{i}].members"):
            lost.append(
                f"$.groups[{i}].members: which lamps are in a group is the gateway config's, not the policy's; ignored"
            )
    raw_source = root.get("source")
    source: dict[str, Any] = raw_source if isinstance(raw_source, dict) else {}
    policy_name = name or source.get("policy") or "talq-import"
    policy_name = _name(policy_name, "$.source.policy")
    description = source.get("description") if isinstance(source.get("description"), str) else ""
    text = render_toml(policy_name, description or f"Imported from TALQ {TALQ_VERSION}", programs, assign)
    try:
        return parse_policy(text.encode(), "<talq import>"), lost
    except ConfigError as exc:  # a bug here, not in the document: every value was checked above
        raise TalqError("$", f"the imported policy does not validate: {exc}") from exc


def _calendars(
    root: dict[str, Any], programs: dict[str, _Program], skipped: set[str], lost: list[str]
) -> dict[str, str]:
    assign: dict[str, str] = {}
    for i, raw in enumerate(_list(root.get("calendars", []), "$.calendars")):
        path = f"$.calendars[{i}]"
        body = _obj(raw, path)
        group = _name(_field(body, "id", path), f"{path}.id")
        chosen: tuple[str, str] | None = None
        for j, raw_rule in enumerate(_list(body.get("rules", []), f"{path}.rules")):
            where = f"{path}.rules[{j}]"
            rule = _obj(raw_rule, where)
            program = _str(_field(rule, "program", where), f"{where}.program")
            start, end = (rule.get(key) for key in ("startDate", "endDate"))
            limited = (start is not None and _str(start, f"{where}.startDate") != "--01-01") or (
                end is not None and _str(end, f"{where}.endDate") != "--12-31"
            )
            condition = rule.get("condition")
            if condition is None and not limited:
                chosen = (program, f"{where}.program")
                break
            what = "date range"
            if condition is not None:
                what = _str(
                    _field(_obj(condition, f"{where}.condition"), "type", f"{where}.condition"),
                    f"{where}.condition.type",
                )
            lost.append(
                f"{where}: {what} rule (program {program!r}) - our policy runs one program every day for a group; "
                "ignored"
            )
        if chosen is None and "defaultProgram" in body:
            chosen = (_str(body["defaultProgram"], f"{path}.defaultProgram"), f"{path}.defaultProgram")
        if chosen is None:
            lost.append(f"{path}: no unconditional rule and no defaultProgram; group {group!r} not assigned")
            continue
        program, where = chosen
        if program in skipped:
            lost.append(f"{where}: program {program!r} was skipped; group {group!r} not assigned")
        elif program not in programs:
            raise TalqError(where, f"unknown control program {program!r}; defined: {sorted(programs)}")
        else:
            assign[group] = program
    return assign


def _program(body: dict[str, Any], path: str, site: Site | None, lost: list[str]) -> _Program:
    periods = [
        _obj(p, f"{path}.activePeriods[{k}]")
        for k, p in enumerate(_list(_field(body, "activePeriods", path), f"{path}.activePeriods"))
    ]
    controls: dict[int, tuple[int, str]] = {}  # clock minute -> (level, path)
    for k, raw in enumerate(_list(_field(body, "fixedTimeControls", path), f"{path}.fixedTimeControls")):
        where = f"{path}.fixedTimeControls[{k}]"
        control = _obj(raw, where)
        minute, seconds = parse_time(_field(control, "startTime", where), f"{where}.startTime")
        if seconds:
            lost.append(f"{where}.startTime: seconds are not in our programs; taken as {hhmm(minute)}")
        if minute in controls:
            raise TalqError(f"{where}.startTime", f"two fixed-time controls start at {hhmm(minute)}")
        controls[minute] = (_level(_field(control, "command", where), f"{where}.command", lost), where)
    astro = _list(body.get("astroClockTimeControls", []), f"{path}.astroClockTimeControls")
    switching = _switching(periods, astro, path, lost)
    if switching is None:  # on and off by astro-clock time controls that Set the whole night's level
        on, off, level = _astro_switching(astro, path, lost)
        program = _Program(on=on, off=off, level=level, steps=[], boost=None)
    else:
        on_kind, on_value, off_kind, off_value = switching
        program = _schedule(on_kind, on_value, off_kind, off_value, controls, path, site, lost)
    program.boost = _boost(_list(body.get("dynamicControls", []), f"{path}.dynamicControls"), path, lost)
    if program.boost is not None and (program.level == 0 or any(level == 0 for _, level in program.steps)):
        lost.append(f"{path}.dynamicControls: TALQ's Max lifts a lamp its program holds at 0; our boost leaves it off")
    return program


def _switching(
    periods: list[dict[str, Any]], astro: list[Any], path: str, lost: list[str]
) -> tuple[int, float, int, float] | None:
    """(on kind, on value, off kind, off value) from the first active period; None for astro controls."""
    if not periods:
        if astro:
            return None
        lost.append(f"{path}.activePeriods: empty (active all day); our programs switch off each morning: 12:00-11:59")
        return SWITCH_CLOCK, float(NOON), SWITCH_CLOCK, float(NOON - 1)
    for k in range(1, len(periods)):
        lost.append(f"{path}.activePeriods[{k}]: only one active period per program; ignored")
    for k in range(len(astro)):
        lost.append(f"{path}.astroClockTimeControls[{k}]: astro controls on top of an active period; ignored")
    period, where = periods[0], f"{path}.activePeriods[0]"
    kind = _str(_field(period, "name", where), f"{where}.name")
    if kind == "AbsoluteActivePeriod":
        start, start_s = parse_time(_field(period, "startTime", where), f"{where}.startTime")
        end, end_s = parse_time(_field(period, "endTime", where), f"{where}.endTime")
        if start_s or end_s:
            lost.append(f"{where}: seconds are not in our programs; taken as {hhmm(start)}-{hhmm(end)}")
        if start == end:
            lost.append(f"{where}: start = end (active all day); our programs switch off each morning")
            end = (start - 1) % 1440
        return SWITCH_CLOCK, float(start), SWITCH_CLOCK, float(end)
    if kind in ("AstroClockActivePeriod", "AstroAndSensorActivePeriod"):
        sunset = _int(_field(period, "sunsetOffset", where), f"{where}.sunsetOffset", -720, 720)
        sunrise = _int(_field(period, "sunriseOffset", where), f"{where}.sunriseOffset", -720, 720)
        if kind == "AstroAndSensorActivePeriod":
            lost.append(f"{where}: the photocell part of an astro-and-sensor period; switching by the sun alone")
        return SWITCH_SUN, float(sunset), SWITCH_SUN, float(sunrise)
    if kind in ("SensorActivePeriod", "ValueActivePeriod"):
        lost.append(f"{where}: {kind} (switching by a sensor or a value) is not in our programs; sunset to sunrise")
        return SWITCH_SUN, 0.0, SWITCH_SUN, 0.0
    raise TalqError(f"{where}.name", f"unknown active period {kind!r}")


def _astro_switching(astro: list[Any], path: str, lost: list[str]) -> tuple[str, str, int]:
    """On/off from two astro-clock controls: sunset(+a) Set L > 0, sunrise(+b) Set 0."""
    found: dict[str, tuple[int, int]] = {}
    for k, raw in enumerate(astro):
        where = f"{path}.astroClockTimeControls[{k}]"
        control = _obj(raw, where)
        event = _str(_field(control, "solarEventType", where), f"{where}.solarEventType")
        if event not in ("sunset", "sunrise"):
            raise TalqError(f"{where}.solarEventType", f"expected 'sunset' or 'sunrise', got {event!r}")
        offset = _int(_field(control, "offset", where), f"{where}.offset", -720, 720)
        operation = _str(_field(control, "operation", where), f"{where}.operation")
        level = _level(_field(control, "command", where), f"{where}.command", lost)
        if operation != "Set" or event in found or (event == "sunrise") != (level == 0):
            lost.append(f"{where}: only 'Set' at sunset (a level) and at sunrise (0) switch our programs; ignored")
            continue
        found[event] = (offset, level)
    sunset, level = found.get("sunset", (0, 100))
    sunrise, _ = found.get("sunrise", (0, 0))
    if len(found) < 2:
        lost.append(f"{path}.astroClockTimeControls: no sunset Set and sunrise Set 0 pair; sunset to sunrise")
    return (
        switch_text(SWITCH_SUN, sunset, evening=True),
        switch_text(SWITCH_SUN, sunrise, evening=False),
        level,
    )


def _in_force(controls: dict[int, tuple[int, str]], minute: int) -> int | None:
    """TALQ's level at a clock minute: the last control at or before it, wrapping from the day before."""
    if not controls:
        return None
    before = [at for at in controls if at <= minute]
    return controls[max(before) if before else max(controls)][0]


def _schedule(
    on_kind: int,
    on_value: float,
    off_kind: int,
    off_value: float,
    controls: dict[int, tuple[int, str]],
    path: str,
    site: Site | None,
    lost: list[str],
) -> _Program:
    """Base level and steps from fixed-time controls: the level in force at switch-on (clock), or
    at the earliest switch-on of the year at the site (sun; at noon without a site), then every
    control after it in night order."""
    anchor = int(on_value) if on_kind == SWITCH_CLOCK else NOON
    if on_kind != SWITCH_CLOCK and site is not None:
        anchor = earliest_switch_on(Switching(on_kind, on_value, off_kind, off_value, 0.0, ()), site) or NOON
    base = _in_force(controls, anchor)
    if base is None:
        lost.append(f"{path}.fixedTimeControls: empty, so no level; using 100")
        base = 100
    steps = sorted(
        ((at, level) for at, (level, _) in controls.items() if night_minute(at) > night_minute(anchor)),
        key=lambda step: night_minute(step[0]),
    )
    on = switch_text(on_kind, on_value, evening=True)
    off = switch_text(off_kind, off_value, evening=False)
    if on_kind != SWITCH_CLOCK:
        switching = Switching(
            on_kind, on_value, off_kind, off_value, float(base), tuple((a, float(v)) for a, v in steps)
        )
        for index, why in switch_on_divergence(switching, site):
            where = f"{path}.activePeriods[0]" if index < 0 else controls[steps[index][0]][1]
            lost.append(f"{where}: {why}")
    return _Program(on=on, off=off, level=base, steps=steps, boost=None)


def _boost(dynamic: list[Any], path: str, lost: list[str]) -> tuple[int, float] | None:
    """Our motion boost from a sensor-driven FixedControlEffect with operation Max."""
    boost: tuple[int, float] | None = None
    for k, raw in enumerate(dynamic):
        where = f"{path}.dynamicControls[{k}]"
        effect = _obj(_field(_obj(raw, where), "effect", where), f"{where}.effect")
        kind = _str(_field(effect, "type", f"{where}.effect"), f"{where}.effect.type")
        operation = _str(_field(effect, "operation", f"{where}.effect"), f"{where}.effect.operation")
        if kind != "FixedControlEffect" or operation != "Max" or boost is not None:
            why = "a second boost" if boost is not None else f"{kind} with operation {operation}"
            lost.append(f"{where}: {why}; our programs have one sensor boost (FixedControlEffect, Max); ignored")
            continue
        level = _level(_field(effect, "command", f"{where}.effect"), f"{where}.effect.command", lost)
        period = raw.get("period")
        if period is not None:
            window = _obj(period, f"{where}.period")
            start = parse_time(_field(window, "startTime", f"{where}.period"), f"{where}.period.startTime")
            end = parse_time(_field(window, "endTime", f"{where}.period"), f"{where}.period.endTime")
            if start != end:
                lost.append(f"{where}.period: a boost limited to part of the night; ours boosts all night")
        sensors = _obj(
            _obj(effect.get("source", {}), f"{where}.effect.source").get("sensor", {}), f"{where}.effect.source.sensor"
        )
        if _list(sensors.get("sensorAddresses", []), f"{where}.effect.source.sensor.sensorAddresses"):
            lost.append(
                f"{where}.effect.source.sensor: named sensors; our boosts come from detections in the lamp's zone"
            )
        hold = effect.get("holdTime")
        minutes = 5.0 if hold is None else _number(hold, f"{where}.effect.holdTime") / 60.0
        if hold is None:
            lost.append(f"{where}.effect.holdTime: missing; using our default of 5 minutes")
        elif not 0 < minutes <= 120:
            lost.append(f"{where}.effect.holdTime: {hold} s is outside our 0-120 min boost; clamped")
            minutes = min(120.0, max(1.0 / 60.0, minutes))
        boost = (level, minutes)
    return boost


# ----- policy-file text --------------------------------------------------------------------------
def _key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_\-]+", name) else json.dumps(name)


def render_toml(name: str, description: str, programs: dict[str, _Program], assign: dict[str, str]) -> str:
    lines = [
        f"# Imported from a TALQ {TALQ_VERSION} document by `edge-agent talq import` (docs/TALQ.md).",
        "",
        "[policy]",
        f"name = {json.dumps(name)}",
        f"description = {json.dumps(description)}",
    ]
    for program_name, program in programs.items():
        lines += ["", f"[programs.{_key(program_name)}]"]
        lines.append(f"on = {json.dumps(program.on)}")
        lines.append(f"off = {json.dumps(program.off)}")
        lines.append(f"level = {program.level}")
        steps = ", ".join(f'{{ at = "{hhmm(at)}", level = {level} }}' for at, level in program.steps)
        lines.append(f"steps = [{f' {steps} ' if steps else ''}]")
        if program.boost is not None:
            lines.append(f"boost = {{ level = {program.boost[0]}, minutes = {program.boost[1]!r} }}")
    if assign:
        lines += ["", "[assign]"]
        lines += [f"{_key(group)} = {json.dumps(program)}" for group, program in assign.items()]
    return "\n".join(lines) + "\n"


def policy_toml(policy: Policy) -> str:
    """A policy's header, programs and assignment as policy-file text (what an import writes)."""
    programs = {
        name: _Program(
            on=p.on,
            off=p.off,
            level=p.level,
            steps=[(parse_clock(s.at), s.level) for s in p.steps],
            boost=(p.boost.level, float(p.boost.minutes)) if p.boost else None,
        )
        for name, p in policy.programs.items()
    }
    return render_toml(policy.policy.name, policy.policy.description, programs, dict(policy.assign))


__all__ = ["TalqError", "import_talq", "policy_toml", "render_toml"]
