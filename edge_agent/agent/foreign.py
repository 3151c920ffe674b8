"""Foreign topics: devices that speak a topic schema of their own, turned into engine events.

Owns: the gateway file's ``[[foreign_topics]]`` (edge_agent/config.py ``ForeignTopic``):
parsing and checking their topic patterns, the links' subscriptions for them, and decoding a
message on such a topic into an ``Event`` that the normal engine handles (rules, traces,
outbox). What a rule sends back is the policy's ``send`` action (edge_agent/engine).

A pattern is an MQTT filter whose levels may carry names: ``zigbee2mqtt/{device}``,
``village/{gateway}/wearable/{device}/event``, ``shellies/+/relay/#``. The bound levels and
the payload's mapped fields become the event's values, so a rule's condition and a ``send``
template can use them (``{gateway}``, ``{value}``). docs/TOPICS.md, "Foreign topics".
Must not import: the app, the transports.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from edge_agent.engine.rules import split_template
from edge_agent.errors import Problem, ProtocolError
from edge_agent.models import Event

if TYPE_CHECKING:
    from edge_agent.config import ForeignTopic

_NAMED = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_TEMPLATE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class Pattern:
    """A parsed topic pattern: per level a constant, a name (``{x}``), or None (``+``)."""

    levels: tuple[tuple[str, str | None], ...]  # ("const", "village") | ("name", "device") | ("any", None)
    rest: bool  # a trailing "#": any further levels (at least zero)

    @property
    def filter(self) -> str:
        parts = [value if kind == "const" and value is not None else "+" for kind, value in self.levels]
        return "/".join([*parts, "#"] if self.rest else parts)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(value for kind, value in self.levels if kind == "name" and value is not None)

    def match(self, parts: Sequence[str]) -> dict[str, str] | None:
        """The bound names of a topic split at "/", or None if it does not match."""
        n = len(self.levels)
        if len(parts) < n or (len(parts) > n and not self.rest):
            return None
        bound: dict[str, str] = {}
        for (kind, value), part in zip(self.levels, parts, strict=False):
            if kind == "const":
                if part != value:
                    return None
            elif kind == "name" and value is not None:
                bound[value] = part
        return bound


def parse_pattern(text: str) -> Pattern:
    """``"village/{gateway}/wearable/{device}/event"`` -> Pattern. ValueError says what is wrong."""
    if not text or len(text) > 256:
        raise ValueError("expected a topic filter of 1 to 256 characters")
    if text.startswith("$"):
        raise ValueError("topics starting with '$' are the broker's own")
    parts = text.split("/")
    levels: list[tuple[str, str | None]] = []
    rest = False
    seen: set[str] = set()
    for i, part in enumerate(parts):
        named = _NAMED.match(part)
        if part == "#":
            if i != len(parts) - 1:
                raise ValueError("'#' only as the last level")
            rest = True
        elif part == "+":
            levels.append(("any", None))
        elif named is not None:
            name = named.group(1)
            if name in seen:
                raise ValueError(f"level name {name!r} bound twice")
            seen.add(name)
            levels.append(("name", name))
        elif any(c in part for c in "+#{}\x00"):
            raise ValueError(f"level {part!r}: '{{name}}', '+' and '#' must be a whole level")
        elif not part:
            raise ValueError("empty level (two '/' in a row, or a leading or trailing '/')")
        else:
            levels.append(("const", part))
    return Pattern(tuple(levels), rest)


def template_names(template: str) -> set[str]:
    return set(_TEMPLATE.findall(template))


def problems(specs: Sequence[ForeignTopic], source: str) -> list[Problem]:
    """What is wrong in ``[[foreign_topics]]``: bad patterns, templates naming nothing, clashes."""
    found: list[Problem] = []
    names: set[str] = set()
    for i, spec in enumerate(specs):
        where = f"foreign_topics[{i}]"
        if spec.name in names:
            found.append(Problem(source, f"{where}.name", f"duplicate name {spec.name!r}"))
        names.add(spec.name)
        try:
            pattern = parse_pattern(spec.topic)
        except ValueError as exc:
            found.append(Problem(source, f"{where}.topic", str(exc)))
            continue
        if pattern.levels and pattern.levels[0] == ("const", "district"):
            found.append(
                Problem(source, f"{where}.topic", "the district/ namespace is the gateway's own (docs/TOPICS.md)")
            )
        known = set(pattern.names) | set(spec.fields)
        for key in ("device", "event"):
            template: str = getattr(spec, key)
            if not template:
                found.append(Problem(source, f"{where}.{key}", "expected a template such as '{device}'"))
            missing = template_names(template) - known
            if missing and spec.fields:  # without ``fields`` any payload field may be named
                found.append(
                    Problem(
                        source,
                        f"{where}.{key}",
                        f"names {sorted(missing)} are neither topic levels {list(pattern.names)} "
                        f"nor fields {sorted(spec.fields)}",
                    )
                )
        for name, path in spec.fields.items():
            if not path or any(not step for step in path.split(".")):
                found.append(
                    Problem(source, f"{where}.fields.{name}", f"expected a field path like 'a.b', got {path!r}")
                )
    return found


def _lookup(body: Mapping[str, Any], path: str) -> Any:
    value: Any = body
    for step in path.split("."):
        if not isinstance(value, dict) or step not in value:
            raise KeyError(path)
        value = value[step]
    return value


@dataclass(frozen=True)
class _Input:
    spec: ForeignTopic
    pattern: Pattern
    fields: tuple[tuple[str, str], ...]


class ForeignTopics:
    """The compiled ``[[foreign_topics]]`` of one gateway."""

    def __init__(self, specs: Sequence[ForeignTopic], devices: Mapping[str, tuple[str, str | None, str | None]]):
        self.inputs = [_Input(s, parse_pattern(s.topic), tuple(s.fields.items())) for s in specs]
        self.devices = devices  # the configured devices: (kind, group, zone) by id
        self.received: dict[str, int] = {s.name: 0 for s in specs}

    def __bool__(self) -> bool:
        return bool(self.inputs)

    def subscriptions(self, link: str) -> list[tuple[str, int]]:
        return [(one.pattern.filter, one.spec.qos) for one in self.inputs if one.spec.link == link]

    def matches(self, topic: str) -> bool:
        parts = topic.split("/")
        return any(one.pattern.match(parts) is not None for one in self.inputs)

    def decode(self, topic: str, payload: bytes, now: float) -> Event | None:
        """The event a message on a foreign topic stands for; None if no pattern matches.
        ProtocolError (``bad_payload``) names the topic and what is missing."""
        parts = topic.split("/")
        for one in self.inputs:
            bound = one.pattern.match(parts)
            if bound is not None:
                return self._event(one, topic, bound, payload, now)
        return None

    def _event(self, one: _Input, topic: str, bound: dict[str, str], payload: bytes, now: float) -> Event:
        try:
            body = msgspec.json.decode(payload)
        except msgspec.DecodeError as exc:
            raise ProtocolError("bad_payload", where=topic, detail=f"not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise ProtocolError("bad_payload", where=topic, detail="expected a JSON object")
        values: dict[str, Any] = dict(bound)
        if one.fields:
            for name, path in one.fields:
                try:
                    values[name] = _lookup(body, path)
                except KeyError:
                    continue  # an absent field is an absent value: conditions on it are false
        else:
            values.update(body)
        spec = one.spec
        device = self._render(spec.device, values, topic, "device")
        name = self._render(spec.event, values, topic, "event")
        name = spec.events.get(name, name)
        self.received[spec.name] += 1
        known = self.devices.get(device)
        group, zone = (known[1], known[2]) if known is not None and known[0] == spec.kind else (None, None)
        return Event(device, spec.kind, name, now, zone, group, values)

    @staticmethod
    def _render(template: str, values: Mapping[str, Any], topic: str, what: str) -> str:
        out = []
        for i, part in enumerate(split_template(template)):  # literal, name, literal, ...
            if i % 2:
                value = values.get(part)
                if value is None or isinstance(value, dict | list):
                    raise ProtocolError(
                        "bad_payload", where=topic, detail=f"no value for {{{part}}} in the {what} template"
                    )
                part = str(value)
            out.append(part)
        text = "".join(out)
        if not text:
            raise ProtocolError("bad_payload", where=topic, detail=f"empty {what}")
        return text
