"""The policy file: lighting programs, their assignment to lamp groups, rules, responder chains.

Owns: the schema of a policy (one TOML file, the artifact the twin validates, the centre signs
and the gateways run) and its validation into frozen typed objects. ``parse_policy`` takes
bytes and returns a ``Policy`` or raises ``ConfigError`` listing every problem with its key
path (``rules[3].when.for``). Pure: no file or network I/O here.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from typing import Annotated, Any, Literal

import msgspec

from edge_agent.errors import ConfigError, Problem
from edge_agent.policy.chains import Chain, chain_problems
from edge_agent.policy.expr import ExpressionError, compile_condition
from edge_agent.policy.lighting import SWITCH_CIVIL, SWITCH_CLOCK, SWITCH_SUN
from edge_agent.policy.messages import Messages, template_problems
from edge_agent.policy.units import parse_clock, parse_duration, parse_signed_duration

Percent = Annotated[int, msgspec.Meta(ge=0, le=100)]
Name = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")]

# Names a rule condition may use: the triggering event's values and the gateway's context.
EVENT_VALUE_NAMES = frozenset(
    {
        "level", "on", "power_w", "energy_wh", "burn_hours", "faults", "policy_version",
        "heart_rate", "battery", "detection", "confidence", "online", "event", "seq",
        "value",
    }
)  # fmt: skip
CONTEXT_NAMES = frozenset({"device", "kind", "zone", "group", "hour", "minute", "weekday", "is_dark", "sun_elevation"})
CONDITION_NAMES = EVENT_VALUE_NAMES | CONTEXT_NAMES
EVENT_NAMES = frozenset(
    {
        "sos", "fall", "geofence_exit", "person", "vehicle", "motion", "state", "vitals",
        "heartbeat", "online", "offline", "fault",
    }
)  # fmt: skip
DEVICE_KINDS = frozenset({"lamp", "camera", "wearable"})


class Step(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    at: str  # "HH:MM"
    level: Percent


class Boost(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    level: Percent = 100
    minutes: Annotated[float, msgspec.Meta(gt=0, le=120)] = 5.0


class Program(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """TALQ-style program: when to switch, how to dim through the night, how to boost."""

    on: str = "sunset"  # sunset|dusk[+-offset] or "HH:MM"
    off: str = "sunrise"  # sunrise|dawn[+-offset] or "HH:MM"
    level: Percent = 100  # level at switch-on, until the first step
    steps: list[Step] = []
    boost: Boost | None = None


class Selector(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    kind: str | None = None
    devices: list[str] = []
    group: str | None = None
    zone: str | None = None


class EventTrigger(Selector, frozen=True, tag="event", tag_field="trigger", kw_only=True):
    event: str | list[str]


class ThresholdTrigger(Selector, frozen=True, tag="threshold", tag_field="trigger", kw_only=True):
    field: str
    above: float | None = None
    below: float | None = None
    for_: str | int = msgspec.field(name="for", default=0)


class TimeTrigger(msgspec.Struct, frozen=True, tag="time", tag_field="trigger", kw_only=True):
    at: str | None = None  # "HH:MM" every day
    cron: str | None = None  # five-field cron in the gateway's time zone


class SunTrigger(msgspec.Struct, frozen=True, tag="sun", tag_field="trigger", kw_only=True):
    event: Literal["sunset", "sunrise", "dusk", "dawn"]
    offset: str = "0m"


class AbsenceTrigger(Selector, frozen=True, tag="absence", tag_field="trigger", kw_only=True):
    event: str = "heartbeat"
    for_: str | int = msgspec.field(name="for")


Trigger = EventTrigger | ThresholdTrigger | TimeTrigger | SunTrigger | AbsenceTrigger


class SetLamp(msgspec.Struct, frozen=True, tag="set_lamp", tag_field="action", kw_only=True):
    device: str | None = None
    group: str | None = None
    zone: str | None = None
    level: Percent
    for_: str | int | None = msgspec.field(name="for", default=None)


class RaiseAlert(msgspec.Struct, frozen=True, tag="alert", tag_field="action", kw_only=True):
    priority: Annotated[int, msgspec.Meta(ge=1, le=5)] = 3
    message: str = "{event} from {device}"
    notify: str | None = None  # a responder chain


class Notify(msgspec.Struct, frozen=True, tag="notify", tag_field="action", kw_only=True):
    chain: str
    priority: Annotated[int, msgspec.Meta(ge=1, le=5)] = 3
    message: str = "{event} from {device}"


class Publish(msgspec.Struct, frozen=True, tag="publish", tag_field="action", kw_only=True):
    topic: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_\-/]{1,128}$")]
    payload: dict[str, Any] = {}


class Send(msgspec.Struct, frozen=True, tag="send", tag_field="action", kw_only=True):
    """A message in someone else's schema (a foreign topic's device, a hub, a peer system):
    ``topic`` and ``payload`` are templates over the event's values (``{gateway}``,
    ``{device}``, ``{value}``); a payload string that is exactly one ``{name}`` keeps the
    value's JSON type. Nothing is added to the payload. ``outbox``: the message is stored
    with the event's commit and sent until the broker acknowledges it (what triggered it is
    acknowledged only once it is on disk); without it, it is published once, best effort."""

    topic: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    payload: dict[str, Any] = {}
    link: Literal["south", "north"] = "south"
    qos: Literal[0, 1] = 1
    retain: bool = False
    outbox: bool = True


Action = SetLamp | RaiseAlert | Notify | Publish | Send


class Rule(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    id: Name
    when: Trigger
    if_: str | None = msgspec.field(name="if", default=None)
    then: list[Action]
    enabled: bool = True


class Header(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    name: Name
    description: str = ""


class Policy(msgspec.Struct, frozen=True, kw_only=True):
    policy: Header
    programs: dict[Name, Program]
    assign: dict[Name, Name] = {}  # lamp group -> program; "default" for the rest
    chains: dict[Name, Chain] = {}
    rules: list[Rule] = []
    messages: Messages = Messages()  # what a responder's SMS says and what a reply must say
    sha256: str = ""  # of the file's bytes; filled by parse_policy

    def program_for_group(self, group: str | None) -> str | None:
        if group is not None and group in self.assign:
            return self.assign[group]
        return self.assign.get("default")


# ---------------------------------------------------------------------------------------------
_SWITCH = re.compile(r"^\s*(sunset|sunrise|dusk|dawn)\s*(?:([+-])\s*(\S+))?\s*$")


def parse_switch(text: str, *, evening: bool) -> tuple[int, float]:
    """``"sunset+10m"`` -> (SWITCH_SUN, 10.0); ``"dusk"`` -> (SWITCH_CIVIL, 0); ``"22:30"`` -> clock."""
    if ":" in text:
        return SWITCH_CLOCK, float(parse_clock(text))
    match = _SWITCH.match(text)
    if match is None:
        raise ValueError(f"expected e.g. 'sunset', 'dusk-10m' or '18:30', got {text!r}")
    event, sign, offset = match.groups()
    allowed = ("sunset", "dusk") if evening else ("sunrise", "dawn")
    if event not in allowed:
        raise ValueError(f"{'on' if evening else 'off'} must use {' or '.join(allowed)}, got {event!r}")
    minutes = parse_duration(offset) / 60.0 if offset else 0.0
    kind = SWITCH_SUN if event in ("sunset", "sunrise") else SWITCH_CIVIL
    return kind, -minutes if sign == "-" else minutes


def _problem_from_validation(source: str, prefix: str, exc: msgspec.ValidationError) -> Problem:
    text = str(exc)
    path = prefix
    match = re.search(r" - at `\$(.*)`$", text)
    if match:
        path = prefix + match.group(1)
        text = text[: match.start()]
    return Problem(source, path.lstrip("."), text)


def convert_section(raw: Any, schema: Any, source: str, path: str, problems: list[Problem]) -> Any | None:
    """msgspec.convert one section, recording a path-naming problem instead of raising."""
    try:
        return msgspec.convert(raw, schema)
    except msgspec.ValidationError as exc:
        found = _field_problems(raw, schema, source, path) if isinstance(raw, dict) else []
        problems.extend(found or [_problem_from_validation(source, path, exc)])
        return None


def _field_problems(raw: dict[str, Any], schema: Any, source: str, path: str) -> list[Problem]:
    """Check a table field by field so that every bad key is reported, not just the first."""
    if not (isinstance(schema, type) and issubclass(schema, msgspec.Struct)):
        return []
    info = msgspec.structs.fields(schema)
    names = {f.encode_name for f in info}
    tag_field = schema.__struct_config__.tag_field
    found: list[Problem] = []
    for key in raw:
        if key not in names and key != tag_field:
            found.append(Problem(source, f"{path}.{key}", f"unknown key; expected one of {sorted(names)}"))
    for field in info:
        if field.encode_name not in raw:
            if field.required:
                found.append(Problem(source, f"{path}.{field.encode_name}", "missing required key"))
            continue
        try:
            msgspec.convert(raw[field.encode_name], field.type)
        except msgspec.ValidationError as exc:
            found.append(_problem_from_validation(source, f"{path}.{field.encode_name}", exc))
    return found


def load_toml(data: bytes, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError([Problem(source, "", f"not UTF-8 text ({exc.reason})")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([Problem(source, "", f"TOML syntax error: {exc}")]) from None


def parse_policy(data: bytes, source: str = "<policy>") -> Policy:
    """Validate a policy file's bytes completely; raise ConfigError with every problem."""
    raw = load_toml(data, source)
    problems: list[Problem] = []
    known = {"policy", "programs", "assign", "chains", "rules", "messages"}
    for key in raw:
        if key not in known:
            problems.append(Problem(source, key, f"unknown section; expected one of {sorted(known)}"))
    header = convert_section(raw.get("policy"), Header, source, "policy", problems)
    programs: dict[str, Program] = {}
    raw_programs = raw.get("programs", {})
    if not isinstance(raw_programs, dict) or not raw_programs:
        problems.append(Problem(source, "programs", "expected at least one [programs.NAME] table"))
        raw_programs = {}
    for name, body in raw_programs.items():
        program = convert_section(body, Program, source, f"programs.{name}", problems)
        if program is not None:
            programs[name] = program
            _check_program(program, source, f"programs.{name}", problems)
    assign = convert_section(raw.get("assign", {}), dict[Name, Name], source, "assign", problems) or {}
    for group, program_name in assign.items():
        if raw_programs and program_name not in raw_programs:
            problems.append(
                Problem(
                    source,
                    f"assign.{group}",
                    f"unknown program {program_name!r}; defined: {sorted(raw_programs)}",
                )
            )
    chains: dict[str, Chain] = {}
    for name, body in (raw.get("chains") or {}).items():
        chain = convert_section(body, Chain, source, f"chains.{name}", problems)
        if chain is not None:
            chains[name] = chain
            problems += chain_problems(chain, source, f"chains.{name}")
    rules: list[Rule] = []
    seen: set[str] = set()
    raw_rules = raw.get("rules", [])
    if not isinstance(raw_rules, list):
        problems.append(Problem(source, "rules", "expected an array of [[rules]] tables"))
        raw_rules = []
    for i, body in enumerate(raw_rules):
        rule = convert_section(body, Rule, source, f"rules[{i}]", problems)
        if rule is None:
            continue
        if rule.id in seen:
            problems.append(Problem(source, f"rules[{i}].id", f"duplicate rule id {rule.id!r}"))
        seen.add(rule.id)
        _check_rule(rule, chains, source, f"rules[{i}]", problems)
        rules.append(rule)
    messages = convert_section(raw.get("messages", {}), Messages, source, "messages", problems)
    if messages is not None:
        problems.extend(Problem(source, key, what) for key, what in template_problems(messages))
    if problems or header is None or messages is None:
        raise ConfigError(problems)
    return Policy(
        policy=header,
        programs=programs,
        assign=assign,
        chains=chains,
        rules=rules,
        messages=messages,
        sha256=hashlib.sha256(data).hexdigest(),
    )


def _check_duration(value: str | int | None, source: str, path: str, problems: list[Problem]) -> None:
    if value is None:
        return
    try:
        parse_duration(value)
    except ValueError as exc:
        problems.append(Problem(source, path, str(exc)))


def _check_program(program: Program, source: str, path: str, problems: list[Problem]) -> None:
    for key, text, evening in (("on", program.on, True), ("off", program.off, False)):
        try:
            parse_switch(text, evening=evening)
        except ValueError as exc:
            problems.append(Problem(source, f"{path}.{key}", str(exc)))
    for i, step in enumerate(program.steps):
        try:
            parse_clock(step.at)
        except ValueError as exc:
            problems.append(Problem(source, f"{path}.steps[{i}].at", str(exc)))


def _check_rule(rule: Rule, chains: dict[str, Chain], source: str, path: str, problems: list[Problem]) -> None:
    when = rule.when
    if isinstance(when, Selector) and when.kind is not None and when.kind not in DEVICE_KINDS:
        problems.append(
            Problem(
                source,
                f"{path}.when.kind",
                f"expected one of {sorted(DEVICE_KINDS)}, got {when.kind!r}",
            )
        )
    if isinstance(when, EventTrigger | AbsenceTrigger):
        names = [when.event] if isinstance(when.event, str) else when.event
        for name in names:
            if name not in EVENT_NAMES:
                problems.append(
                    Problem(
                        source,
                        f"{path}.when.event",
                        f"unknown event {name!r}; expected one of {sorted(EVENT_NAMES)}",
                    )
                )
    if isinstance(when, ThresholdTrigger):
        if when.above is None and when.below is None:
            problems.append(Problem(source, f"{path}.when", "a threshold needs 'above' or 'below'"))
        if when.field not in EVENT_VALUE_NAMES:
            problems.append(Problem(source, f"{path}.when.field", f"unknown value {when.field!r}"))
        _check_duration(when.for_, source, f"{path}.when.for", problems)
    if isinstance(when, AbsenceTrigger):
        _check_duration(when.for_, source, f"{path}.when.for", problems)
    if isinstance(when, TimeTrigger):
        if (when.at is None) == (when.cron is None):
            problems.append(Problem(source, f"{path}.when", "a time trigger needs exactly one of 'at' or 'cron'"))
        elif when.at is not None:
            try:
                parse_clock(when.at)
            except ValueError as exc:
                problems.append(Problem(source, f"{path}.when.at", str(exc)))
        elif when.cron is not None and not _valid_cron(when.cron):
            problems.append(Problem(source, f"{path}.when.cron", f"invalid cron expression {when.cron!r}"))
    if isinstance(when, SunTrigger):
        try:
            parse_signed_duration(when.offset)
        except ValueError as exc:
            problems.append(Problem(source, f"{path}.when.offset", str(exc)))
    if rule.if_ is not None:
        try:
            compile_condition(rule.if_, CONDITION_NAMES)
        except ExpressionError as exc:
            problems.append(Problem(source, f"{path}.if", str(exc)))
    if not rule.then:
        problems.append(Problem(source, f"{path}.then", "expected at least one action"))
    for j, action in enumerate(rule.then):
        where = f"{path}.then[{j}]"
        if isinstance(action, SetLamp):
            targets = [t for t in (action.device, action.group, action.zone) if t is not None]
            if len(targets) != 1:
                problems.append(Problem(source, where, "set_lamp needs exactly one of device, group or zone"))
            _check_duration(action.for_, source, f"{where}.for", problems)
        chain = (
            action.notify if isinstance(action, RaiseAlert) else (action.chain if isinstance(action, Notify) else None)
        )
        if isinstance(action, Send):
            problem = send_topic_problem(action.topic)
            if problem:
                problems.append(Problem(source, f"{where}.topic", problem))
        if chain is not None and chain not in chains:
            problems.append(Problem(source, where, f"unknown responder chain {chain!r}; defined: {sorted(chains)}"))


def send_topic_problem(template: str) -> str | None:
    """Why a ``send`` topic template cannot be published to, or None."""
    if template.startswith("$"):
        return "topics starting with '$' are the broker's own"
    if "+" in template or "#" in template or "\x00" in template:
        return "a topic to publish to has no wildcards ('+', '#')"
    if any(not level for level in template.split("/")):
        return "empty level (two '/' in a row, or a leading or trailing '/')"
    return None


def _valid_cron(expression: str) -> bool:
    from croniter import croniter  # only policies with cron rules pay for it (~6 MB)

    return bool(croniter.is_valid(expression))
