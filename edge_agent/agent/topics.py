"""The topic namespace, in one place: every topic the agent publishes or subscribes is built
here from ``TOPIC_CLASSES``. Documented with examples in docs/TOPICS.md.

The registry below is the source of truth; this summary is checked against it by
tests/test_topics.py. Every topic of a gateway lives under ``district/v1/<gateway>/``:

south (devices and responders, on the local broker)
  lamp/<id>/state            lamp -> gateway     LampState
  lamp/<id>/set              gateway -> lamp     LampCommand (QoS 1)
  lamp/<id>/program          gateway -> lamp     retained LampProgram with the policy version
  camera/<id>/event          camera -> gateway   CameraEvent
  camera/<id>/status         camera -> gateway   DeviceStatus
  wearable/<id>/event        wearable -> gateway WearableEvent (sos, fall, geofence_exit)
  wearable/<id>/vitals       wearable -> gateway WearableVitals
  wearable/<id>/heartbeat    wearable -> gateway Heartbeat
  responder/<id>/alert       gateway -> responder AlertMessage (QoS 1)
  responder/<id>/ack         responder -> gateway ResponderAck
  responder/<id>/resolved    responder -> gateway ResponderResolved: available again
  alarm                      gateway -> operator local alarm: the gateway cannot keep a promise
north (the city platform; the south broker when there is no uplink)
  status                     retained "online" / "offline" (birth and last will, on both links)
  alert                      AlertMessage, every change of every alert (QoS 1, outbox)
  event/<topic>              what a rule's publish action sends (QoS 1, outbox)
  telemetry/lamp/<id>        gateway -> centre   every lamp state report (outbox, uplink only)
  policy                     centre -> gateway   retained signed policy bundle
  policy/ack                 gateway -> centre   accepted / already_active / rejected + reason
  rollout                    gateway -> centre   retained {policy_version, lamps, on_version, retries}
  shadow/report              gateway -> centre   ShadowReport of one day: candidate vs active ([shadow])
  history                    gateway -> centre   rows of the field history tables (outbox, uplink only)
  health                     gateway -> centre   retained {outbox, uplink_outages, policy_version} (uplink only)
  command/ack                centre -> gateway   an operator at the centre's console takes an alert

Home Assistant (opt-in, ``[homeassistant] enabled = true``; south broker): a second registry,
``HOMEASSISTANT_CLASSES``, apart because its classes exist only when the feature is on (the
tests that check "every class on the wire" run a gateway without it) and two of them live
outside the gateway root, under Home Assistant's discovery prefix (``outside_root``):
    <prefix>/device/<id>/config  gateway -> HA, retained device discovery (dev, o, cmps)
    <prefix>/status              HA -> gateway, HA's birth: "online" makes the gateway re-announce
    ha/lamp/<id>/state           gateway -> HA, retained {"state","brightness","color_mode"}
    ha/lamp/<id>/set             HA -> gateway, {"state","brightness"}: an engine override
    ha/wearable/<id>/state       gateway -> HA, retained {"heart_rate","battery"}
    ha/wearable/<id>/event       gateway -> HA, {"event_type": "sos" | "fall" | "geofence_exit"}
    ha/camera/<id>/motion        gateway -> HA, "ON" (HA turns it off after a delay)
HA also reads the gateway's ``status`` (availability and the gateway's connectivity sensor).

Patterns are relative to the gateway root, in MQTT filter syntax with named levels:
``{lamp}`` is one level, ``{topic...}`` the rest of the topic (one or more levels).
Must not import anything of ours: transports, the engine and the docs read this module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PREFIX = "district/v1"

SOUTH = "south"
NORTH = "north"
BOTH = "both"  # announced on each link's own broker (the birth and the last will)


@dataclass(frozen=True)
class TopicClass:
    name: str  # "lamp_state", "lamp_set", "alarm", "telemetry_lamp", ...
    pattern: str  # relative to the gateway root: "lamp/{lamp}/state", "event/{topic...}"
    side: str  # "south" (local broker), "north" (city platform; the south broker without uplink), "both"
    publisher: str  # "gateway", "lamp", "camera", "wearable", "responder", "centre"
    qos: int  # the QoS the gateway publishes, or subscribes, with
    retained: bool
    payload: str  # model name in edge_agent.models, or a short description of the body
    outside_root: bool = False  # relative to Home Assistant's discovery prefix, not the gateway root

    @property
    def inbound(self) -> bool:
        """The gateway subscribes to it (someone else publishes)."""
        return self.publisher != "gateway"

    @property
    def levels(self) -> tuple[str, ...]:
        """The named levels, in order: ("lamp",) for "lamp/{lamp}/state"."""
        return tuple(name for name, _ in _LEVEL.findall(self.pattern))

    @property
    def display(self) -> str:
        """The human form used in docs: "lamp/<id>/state", "event/<topic>"."""
        return _LEVEL.sub(lambda m: f"<{m.group(1)}>" if m.group(2) else "<id>", self.pattern)


_LEVEL = re.compile(r"\{(\w+)(\.\.\.)?\}")

TOPIC_CLASSES: tuple[TopicClass, ...] = (
    # south, devices and responders -> gateway
    TopicClass("lamp_state", "lamp/{lamp}/state", SOUTH, "lamp", 1, False, "LampState"),
    TopicClass("camera_event", "camera/{camera}/event", SOUTH, "camera", 1, False, "CameraEvent"),
    TopicClass("camera_status", "camera/{camera}/status", SOUTH, "camera", 1, False, "DeviceStatus"),
    TopicClass("wearable_event", "wearable/{wearable}/event", SOUTH, "wearable", 1, False, "WearableEvent"),
    TopicClass("wearable_vitals", "wearable/{wearable}/vitals", SOUTH, "wearable", 1, False, "WearableVitals"),
    TopicClass("wearable_heartbeat", "wearable/{wearable}/heartbeat", SOUTH, "wearable", 1, False, "Heartbeat"),
    TopicClass("responder_ack", "responder/{responder}/ack", SOUTH, "responder", 1, False, "ResponderAck"),
    TopicClass(
        "responder_resolved", "responder/{responder}/resolved", SOUTH, "responder", 1, False, "ResponderResolved"
    ),
    # south, gateway -> devices, responders and whoever watches the local broker
    TopicClass("lamp_set", "lamp/{lamp}/set", SOUTH, "gateway", 1, False, "LampCommand"),
    TopicClass("lamp_program", "lamp/{lamp}/program", SOUTH, "gateway", 1, True, "LampProgram"),
    TopicClass("responder_alert", "responder/{responder}/alert", SOUTH, "gateway", 1, False, "AlertMessage"),
    TopicClass("alarm", "alarm", SOUTH, "gateway", 1, False, "Alarm {v, ts, reason, detail}"),
    # north: the city platform
    TopicClass("status", "status", BOTH, "gateway", 1, True, "text: online | offline"),
    TopicClass("alert", "alert", NORTH, "gateway", 1, False, "AlertMessage"),
    TopicClass("event", "event/{topic...}", NORTH, "gateway", 1, False, "rule publish payload + rule, device, ts"),
    TopicClass("telemetry_lamp", "telemetry/lamp/{lamp}", NORTH, "gateway", 1, False, "LampState values"),
    TopicClass("policy", "policy", NORTH, "centre", 1, True, "signed policy bundle"),
    TopicClass("policy_ack", "policy/ack", NORTH, "gateway", 1, False, "PolicyAck"),
    TopicClass("rollout", "rollout", NORTH, "gateway", 1, True, "RolloutSummary"),
    TopicClass("shadow_report", "shadow/report", NORTH, "gateway", 1, False, "ShadowReport (one day)"),
    TopicClass("history", "history", NORTH, "gateway", 1, False, "{table, since, columns, rows} (field history)"),
    TopicClass("health", "health", NORTH, "gateway", 1, True, "{ts, outbox, uplink_outages, policy_version}"),
    TopicClass("command_ack", "command/ack", NORTH, "centre", 1, False, "OperatorAck {v, alert_id, by}"),
)

BY_NAME: dict[str, TopicClass] = {topic_class.name: topic_class for topic_class in TOPIC_CLASSES}


def root(gateway: str) -> str:
    return f"{PREFIX}/{gateway}"


def _fill(topic_class: TopicClass, levels: dict[str, str]) -> str:
    """The class's pattern with every named level given a value (ValueError if one is missing)."""
    if set(levels) != set(topic_class.levels):
        raise ValueError(f"topic {topic_class.name!r} takes levels {topic_class.levels}, got {tuple(levels)}")
    return _LEVEL.sub(lambda m: levels[m.group(1)], topic_class.pattern)


def _wild(topic_class: TopicClass, levels: dict[str, str]) -> str:
    """The class's pattern as a filter: the given levels fixed, the others ``+`` (``#`` for a
    multi-level one)."""

    def level(m: re.Match[str]) -> str:
        name, rest = m.group(1), m.group(2)
        if name in levels:
            return levels[name] + ("/#" if rest else "")
        return "#" if rest else "+"

    return _LEVEL.sub(level, topic_class.pattern)


def build(gateway: str, name: str, **levels: str) -> str:
    """The topic of class ``name`` for these level values; every topic string is made here."""
    return f"{root(gateway)}/{_fill(BY_NAME[name], levels)}"


def bind(topic_class: TopicClass, gateway: str, **levels: str) -> str:
    """A filter for the class under ``root(gateway)`` with some named levels fixed and the
    others wild (``+``, or ``#`` for a multi-level one). ``gateway`` may itself be a filter
    or an ACL placeholder: ``bind(c, "%u", lamp="%u")``, ``bind(c, "+")``."""
    return f"{root(gateway)}/{_wild(topic_class, levels)}"


# ----- one builder per class the gateway publishes or subscribes -----------------------------
def lamp_set(gateway: str, lamp: str) -> str:
    return build(gateway, "lamp_set", lamp=lamp)


def lamp_program(gateway: str, lamp: str) -> str:
    return build(gateway, "lamp_program", lamp=lamp)


def responder_alert(gateway: str, responder: str) -> str:
    return build(gateway, "responder_alert", responder=responder)


def alarm(gateway: str) -> str:
    return build(gateway, "alarm")


def status(gateway: str) -> str:
    return build(gateway, "status")


def alert(gateway: str) -> str:
    return build(gateway, "alert")


def event(gateway: str, topic: str) -> str:
    """A rule's publish action: ``topic`` may have several levels ("report/morning")."""
    return build(gateway, "event", topic=topic)


def telemetry_lamp(gateway: str, lamp: str) -> str:
    return build(gateway, "telemetry_lamp", lamp=lamp)


def policy(gateway: str) -> str:
    return build(gateway, "policy")


def policy_ack(gateway: str) -> str:
    return build(gateway, "policy_ack")


def rollout(gateway: str) -> str:
    return build(gateway, "rollout")


def command_ack(gateway: str) -> str:
    """The centre's operator acknowledges an alert of this gateway (the console)."""
    return build(gateway, "command_ack")


def shadow_report(gateway: str) -> str:
    return build(gateway, "shadow_report")


def history(gateway: str) -> str:
    return build(gateway, "history")


def health(gateway: str) -> str:
    return build(gateway, "health")


# the south broker's own count of messages it dropped (Mosquitto 2.x; edge_agent/agent/drops.py)
BROKER_DROPPED = "$SYS/broker/publish/messages/dropped"


# ----- subscriptions and parsing ---------------------------------------------------------------
def subscriptions(gateway: str, link: str, *, uplink: bool) -> list[tuple[str, int]]:
    """(filter, QoS) for every inbound class the ``link`` ("south" or "north") carries.

    Without an uplink the north classes (the centre's policy) come over the south broker.
    """
    wanted = {SOUTH, BOTH} if link == SOUTH else {NORTH, BOTH}
    if link == SOUTH and not uplink:
        wanted.add(NORTH)
    if link == NORTH and not uplink:
        return []
    return [(bind(c, gateway), c.qos) for c in TOPIC_CLASSES if c.inbound and c.side in wanted]


def match(gateway: str, topic: str) -> tuple[TopicClass, dict[str, str]] | None:
    """The class of a full topic and its level values, or None if it is not one of ours."""
    prefix = root(gateway) + "/"
    if not topic.startswith(prefix):
        return None
    parts = topic[len(prefix) :].split("/")
    if not all(parts):
        return None
    for topic_class in TOPIC_CLASSES:
        levels = _match_parts(topic_class.pattern.split("/"), parts)
        if levels is not None:
            return topic_class, levels
    return None


def _match_parts(pattern: list[str], parts: list[str]) -> dict[str, str] | None:
    levels: dict[str, str] = {}
    for i, piece in enumerate(pattern):
        named = _LEVEL.fullmatch(piece)
        if named is not None and named.group(2):  # "{topic...}": the rest, at least one level
            if i >= len(parts):
                return None
            levels[named.group(1)] = "/".join(parts[i:])
            return levels
        if i >= len(parts):
            return None
        if named is not None:
            levels[named.group(1)] = parts[i]
        elif piece != parts[i]:
            return None
    return levels if len(pattern) == len(parts) else None


def split(gateway: str, topic: str) -> tuple[str, str, str] | None:
    """``district/v1/gw/lamp/L1/state`` -> ("lamp", "L1", "state"); None if not ours."""
    prefix = root(gateway) + "/"
    if not topic.startswith(prefix):
        return None
    parts = topic[len(prefix) :].split("/")
    if len(parts) != 3 or not all(parts):
        return None
    return parts[0], parts[1], parts[2]


# ----- Home Assistant (opt-in: [homeassistant] enabled = true) ----------------------------------
HOMEASSISTANT = "homeassistant"  # the publisher name of what Home Assistant sends, and its south user

HOMEASSISTANT_CLASSES: tuple[TopicClass, ...] = (
    # under Home Assistant's discovery prefix ([homeassistant] prefix), outside the gateway root
    TopicClass(
        "ha_discovery",
        "device/{device}/config",
        SOUTH,
        "gateway",
        1,
        True,
        "HA device discovery {dev, o, cmps, availability}",
        outside_root=True,
    ),
    TopicClass("ha_birth", "status", SOUTH, HOMEASSISTANT, 1, False, "text: online | offline", outside_root=True),
    # under the gateway root
    TopicClass("ha_lamp_state", "ha/lamp/{lamp}/state", SOUTH, "gateway", 1, True, "HA JSON light state"),
    TopicClass("ha_lamp_set", "ha/lamp/{lamp}/set", SOUTH, HOMEASSISTANT, 1, False, "HA JSON light command"),
    TopicClass("ha_wearable_state", "ha/wearable/{wearable}/state", SOUTH, "gateway", 1, True, "{heart_rate, battery}"),
    TopicClass("ha_wearable_event", "ha/wearable/{wearable}/event", SOUTH, "gateway", 1, False, "{event_type}"),
    TopicClass("ha_camera_motion", "ha/camera/{camera}/motion", SOUTH, "gateway", 1, False, "text: ON"),
)

HA_BY_NAME: dict[str, TopicClass] = {topic_class.name: topic_class for topic_class in HOMEASSISTANT_CLASSES}


def _ha_base(topic_class: TopicClass, gateway: str, prefix: str) -> str:
    return prefix if topic_class.outside_root else root(gateway)


def ha_build(gateway: str, prefix: str, name: str, **levels: str) -> str:
    """The topic of Home Assistant class ``name``: under ``prefix`` (HA's discovery prefix) for
    a class outside the root, else under the gateway root."""
    topic_class = HA_BY_NAME[name]
    return f"{_ha_base(topic_class, gateway, prefix)}/{_fill(topic_class, levels)}"


def ha_bind(topic_class: TopicClass, gateway: str, prefix: str, **levels: str) -> str:
    """``bind`` for a Home Assistant class: its filter, under ``prefix`` or the gateway root."""
    return f"{_ha_base(topic_class, gateway, prefix)}/{_wild(topic_class, levels)}"


def ha_discovery(prefix: str, device: str) -> str:
    """``<prefix>/device/<device>/config``: HA's device-based discovery (outside the root)."""
    return ha_build("", prefix, "ha_discovery", device=device)


def ha_birth(prefix: str) -> str:
    """``<prefix>/status``: Home Assistant's birth and last will."""
    return ha_build("", prefix, "ha_birth")


def build_ha(gateway: str, name: str, **levels: str) -> str:
    """A Home Assistant class under the gateway root (no discovery prefix needed), the one
    builder of them: ``build_ha(gw, "ha_lamp_state", lamp="L1")``."""
    if HA_BY_NAME[name].outside_root:
        raise ValueError(f"topic {name!r} lives under Home Assistant's prefix: use ha_build")
    return ha_build(gateway, "", name, **levels)


def ha_subscriptions(gateway: str, prefix: str) -> list[tuple[str, int]]:
    """(filter, QoS) of every Home Assistant class the gateway subscribes to (south link)."""
    return [(ha_bind(c, gateway, prefix), c.qos) for c in HOMEASSISTANT_CLASSES if c.inbound]


def ha_match(gateway: str, prefix: str, topic: str) -> tuple[TopicClass, dict[str, str]] | None:
    """The Home Assistant class of a full topic and its level values, or None."""
    for topic_class in HOMEASSISTANT_CLASSES:
        base = _ha_base(topic_class, gateway, prefix) + "/"
        if not topic.startswith(base):
            continue
        parts = topic[len(base) :].split("/")
        if not all(parts):
            continue
        levels = _match_parts(topic_class.pattern.split("/"), parts)
        if levels is not None:
            return topic_class, levels
    return None


def ha_discovery_filters(prefix: str) -> list[str]:
    """What Home Assistant's MQTT integration subscribes to for discovery under ``prefix``
    (``<prefix>/+/+/config``, ``<prefix>/+/+/+/config``): its user must be granted these."""
    config = HA_BY_NAME["ha_discovery"].pattern.rsplit("/", 1)[1]
    return [f"{prefix}/+/+/{config}", f"{prefix}/+/+/+/{config}"]
