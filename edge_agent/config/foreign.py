"""The gateway file's ``[[foreign_topics]]``: their declaration and the parser of their topic patterns.

Owns: ``ForeignTopic`` (one ``[[foreign_topics]]`` entry), ``Pattern`` and ``parse_pattern`` (a
topic pattern: an MQTT filter whose levels may carry names, ``zigbee2mqtt/{device}``,
``village/{gateway}/wearable/{device}/event``, ``shellies/+/relay/#``) and
``foreign_topic_problems`` (what ``load_config`` reports about them; ``schema.GatewayFile``
holds the entries). Turning a message on such a topic into an engine event is the agent's
(``edge_agent.agent.foreign.ForeignTopics``).
Must not import: edge_agent.agent, edge_agent.engine, the transports (the config is read first).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import msgspec

from edge_agent.errors import Problem
from edge_agent.policy.model import Name

__all__ = ["ForeignTopic", "Pattern", "foreign_topic_problems", "parse_pattern", "template_names"]


class ForeignTopic(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Devices with a topic schema of their own (Tasmota, Zigbee2MQTT, Shelly, a wearable hub)
    turned into engine events (edge_agent/agent/foreign.py; docs/TOPICS.md "Foreign topics").

    ``topic`` is an MQTT filter whose levels may be bound to names: ``{name}`` is one level,
    ``+`` one unnamed level, a trailing ``#`` the rest. The payload must be a JSON object.
    ``fields`` maps event value names to payload fields (``"ENERGY.Power"`` reaches into
    objects); without ``fields`` every top-level field is taken under its own name. ``device``
    and ``event`` are templates over the bound names and the values; ``events`` renames event
    names (``{ hr = "vitals" }``). Policy rules then select on ``kind`` and the event name.
    """

    name: Name
    topic: str
    link: Literal["south", "north"] = "south"
    qos: Literal[0, 1] = 1
    kind: Name
    device: str = "{device}"
    event: str
    events: dict[str, Name] = {}
    fields: dict[Name, str] = {}


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


def foreign_topic_problems(specs: Sequence[ForeignTopic], source: str) -> list[Problem]:
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
