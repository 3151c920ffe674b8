"""Rules compiled once into matchers, conditions and message templates.

Owns: turning ``policy.model.Rule`` declarations into ``CompiledRule`` objects with a fast
device selector and a compiled condition; the safe message template.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from edge_agent.models import Event
from edge_agent.policy.expr import Compiled, compile_condition
from edge_agent.policy.model import (
    CONDITION_NAMES,
    AbsenceTrigger,
    Action,
    EventTrigger,
    Rule,
    Selector,
    SunTrigger,
    ThresholdTrigger,
    TimeTrigger,
)
from edge_agent.policy.units import parse_duration

_FIELD = re.compile(r"\{(\w+)\}")


def render(template: str, values: Mapping[str, Any]) -> str:
    """Fill ``{name}`` fields; no attribute access or indexing (unlike str.format)."""

    def one(match: re.Match[str]) -> str:
        try:
            value = values[match.group(1)]
        except KeyError:
            return "?"
        return f"{value:g}" if isinstance(value, float) else str(value)

    return _FIELD.sub(one, template)


_ONE_FIELD = re.compile(r"^\{(\w+)\}$")


@functools.lru_cache(maxsize=4096)
def split_template(template: str) -> tuple[str, ...]:
    """A template as alternating parts: literal, name, literal, name, ..., literal."""
    return tuple(_FIELD.split(template))


def render_value(template: Any, values: Mapping[str, Any]) -> Any:
    """A ``send`` payload: strings are templates; a string that is exactly one ``{name}``
    keeps the value's own type (an int stays an int); objects and lists are filled inside.
    KeyError names a missing value."""
    if isinstance(template, str):
        parts = split_template(template)
        if len(parts) == 3 and not parts[0] and not parts[2]:  # exactly "{name}"
            return values[parts[1]]
        return "".join(_text(values[part]) if i % 2 else part for i, part in enumerate(parts))
    if isinstance(template, dict):
        return {k: render_value(v, values) for k, v in template.items()}
    if isinstance(template, list):
        return [render_value(v, values) for v in template]
    return template


def render_topic(template: str, values: Mapping[str, Any]) -> str:
    """A ``send`` topic; KeyError for a missing value, ValueError for a value that would
    change the topic's shape (a '/', '+', '#', or an empty level)."""
    parts = split_template(template)
    out = []
    for i, part in enumerate(parts):
        if i % 2:
            text = _text(values[part])
            if not text or any(c in text for c in "/+#\x00"):
                raise ValueError(f"{{{part}}} = {text!r} cannot be a topic level")
            part = text
        out.append(part)
    return "".join(out)


def _text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def selector(sel: Selector) -> Callable[[Event], bool]:
    devices = frozenset(sel.devices)
    kind, group, zone = sel.kind, sel.group, sel.zone

    def matches(event: Event) -> bool:
        return (
            (kind is None or event.kind == kind)
            and (not devices or event.device in devices)
            and (group is None or event.group == group)
            and (zone is None or event.zone == zone)
        )

    return matches


@dataclass(frozen=True, slots=True)
class CompiledRule:
    id: str
    trigger: str  # event | threshold | time | sun | absence
    events: frozenset[str]  # event names this rule listens to (empty for time and sun)
    matches: Callable[[Event], bool]
    condition: Compiled | None
    condition_text: str | None
    for_seconds: float
    field: str | None
    above: float | None
    below: float | None
    actions: tuple[Action, ...]
    declaration: Rule

    def crossed(self, value: float) -> bool:
        return (self.above is not None and value > self.above) or (self.below is not None and value < self.below)


def compile_rule(rule: Rule) -> CompiledRule:
    when = rule.when
    condition = compile_condition(rule.if_, CONDITION_NAMES) if rule.if_ else None
    events: frozenset[str] = frozenset()
    matches: Callable[[Event], bool] = lambda event: False  # noqa: E731
    for_seconds = 0.0
    field = above = below = None
    if isinstance(when, EventTrigger):
        trigger = "event"
        events = frozenset([when.event] if isinstance(when.event, str) else when.event)
        matches = selector(when)
    elif isinstance(when, ThresholdTrigger):
        trigger = "threshold"
        events = frozenset({"state", "vitals"})
        matches = selector(when)
        for_seconds = parse_duration(when.for_)
        field, above, below = when.field, when.above, when.below
    elif isinstance(when, AbsenceTrigger):
        trigger = "absence"
        events = frozenset({when.event})
        matches = selector(when)
        for_seconds = parse_duration(when.for_)
    elif isinstance(when, TimeTrigger):
        trigger = "time"
    elif isinstance(when, SunTrigger):
        trigger = "sun"
    else:  # pragma: no cover - the schema admits no other trigger
        raise TypeError(type(when))
    return CompiledRule(
        id=rule.id,
        trigger=trigger,
        events=events,
        matches=matches,
        condition=condition,
        condition_text=rule.if_,
        for_seconds=for_seconds,
        field=field,
        above=above,
        below=below,
        actions=tuple(rule.then),
        declaration=rule,
    )
