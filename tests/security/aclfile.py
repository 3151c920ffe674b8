"""Reading a Mosquitto ACL file the way Mosquitto does, to ask "may user U read/write topic T?"
without a broker; and sample topics of every class of the registry.

Semantics (Mosquitto 2.x default ACL check): ``topic`` lines after ``user U`` apply to U only
(before any ``user`` line: to anonymous clients); ``pattern`` lines apply to every client,
with ``%u`` replaced by its user name (and ``%c`` by its client id, which these files never
use); a client's rights on a topic are the union of every matching line.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_agent.agent import topics
from edge_agent.agent.topics import TopicClass


@dataclass(frozen=True)
class AclLine:
    user: str | None  # the user of a topic line (None: anonymous); None for a pattern line
    kind: str  # "topic" or "pattern"
    access: str  # "read", "write", "readwrite"
    topic: str


def parse(text: str) -> list[AclLine]:
    rules: list[AclLine] = []
    user: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        words = line.split()
        if words[0] == "user" and len(words) == 2:
            user = words[1]
        elif words[0] in ("topic", "pattern") and len(words) in (2, 3):
            access, topic = (words[1], words[2]) if len(words) == 3 else ("readwrite", words[1])
            assert access in ("read", "write", "readwrite"), line
            rules.append(AclLine(None if words[0] == "pattern" else user, words[0], access, topic))
        else:
            raise AssertionError(f"unexpected ACL line {line!r}")
    return rules


def matches(filter_: str, topic: str) -> bool:
    """MQTT topic filter matching (``+`` one level, ``#`` the rest, including the parent)."""
    f_parts, t_parts = filter_.split("/"), topic.split("/")
    for i, part in enumerate(f_parts):
        if part == "#":
            return True
        if i >= len(t_parts) or (part != "+" and part != t_parts[i]):
            return False
    return len(f_parts) == len(t_parts)


def rights(text: str, user: str, topic: str) -> set[str]:
    """What ``user`` may do on ``topic``: a subset of {"read", "write"}."""
    found: set[str] = set()
    for rule in parse(text):
        if rule.kind == "pattern":
            applies, acl_topic = True, rule.topic.replace("%u", user)
        else:
            applies, acl_topic = rule.user == user, rule.topic
        if applies and matches(acl_topic, topic):
            found.update({"read", "write"} if rule.access == "readwrite" else {rule.access})
    return found


def users(text: str) -> list[str]:
    return [line.split()[1] for line in text.splitlines() if line.startswith("user ")]


def sample_levels(topic_class: TopicClass, value: str = "X1") -> dict[str, str]:
    """A value for each named level; a multi-level one (``{topic...}``) gets two levels."""
    return {name: f"{value}/two" if f"{{{name}...}}" in topic_class.pattern else value for name in topic_class.levels}


def sample(gateway: str, topic_class: TopicClass, **levels: str) -> str:
    """A concrete topic of ``topic_class`` at ``gateway`` (given levels, else sample values)."""
    return topics.build(gateway, topic_class.name, **{**sample_levels(topic_class), **levels})
