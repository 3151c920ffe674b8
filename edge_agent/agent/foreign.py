"""Foreign topics at run time: a message on a device's own topic schema turned into an engine event.

Owns: ``ForeignTopics``, the compiled ``[[foreign_topics]]`` of one gateway (declared and checked
in ``edge_agent.config.foreign``): the links' subscriptions for them, and decoding a message on
such a topic into an ``Event`` that the normal engine handles (rules, traces, outbox). What a
rule sends back is the policy's ``send`` action (edge_agent/engine).

The bound levels of the pattern and the payload's mapped fields become the event's values, so a
rule's condition and a ``send`` template can use them (``{gateway}``, ``{value}``).
docs/TOPICS.md, "Foreign topics".
Must not import: the app, the transports.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from edge_agent.config.foreign import ForeignTopic, Pattern, parse_pattern
from edge_agent.engine.rules import split_template
from edge_agent.errors import ProtocolError
from edge_agent.models import Event


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
