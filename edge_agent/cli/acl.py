"""Mosquitto ACL files made from the topic registry (``topics.TOPIC_CLASSES``), never by hand.

Owns: turning the registry into the two ACLs a deployment needs, so that the broker grants
exactly the topics the agent publishes and subscribes (under MQTT 3.1.1 a denied publish is
acknowledged and dropped; under MQTT 5 it is refused with reason 0x87 - either way a topic
missing from the ACL is a message lost, so the ACL must come from the same table as the topics).

- ``city_acl()``: the city (north) broker, ``deploy/mosquitto/acl``. One set of ``pattern``
  lines on ``%u`` (the authenticated name = the gateway id) grants every gateway what it
  publishes north (write) and what the centre publishes to it (read), in its own namespace
  only; the ``centre`` user reads what gateways publish north, of every gateway, and writes
  what the centre publishes (the policy). Nothing else: no south topic reaches this broker.
- ``south_acl(config)``: the village (south) broker of one gateway
  (``deploy/mosquitto/south.conf``). The gateway's own user reads what devices publish and
  writes what it sends them; each MQTT device and each responder's phone (user name = its
  id in the gateway file) may publish only its own topics and read only its own commands;
  ``centre`` reads what the gateway publishes for the centre on the local broker (``alarm``,
  ``status``). Without an uplink (``[north] url = "none"``, or north on the same broker) the
  north classes are carried by this broker: the gateway gets its north rights here and
  ``centre`` its own (so the centre, or a field laptop with its credentials, can deliver a
  policy locally).
  With ``[homeassistant] enabled = true`` the gateway also gets the rights of the Home
  Assistant classes (``topics.HOMEASSISTANT_CLASSES``: discovery under HA's prefix, light
  commands and states, sensor states) and a ``homeassistant`` user reads and writes what HA's
  MQTT integration needs (``homeassistant_rules``).

``python -m edge_agent.cli.acl --side north`` / ``--side south -c gateway.toml`` prints
(or ``-o`` writes) the file; ``--users`` lists the user names the password file needs.

It lives with the operator's commands, not in ``edge_agent.agent``: the running gateway never
reads an ACL; an operator (``edge-agent acl``), the deployment and the tests generate one, from
the registry the agent publishes with (``edge_agent.agent.topics``) and the gateway file.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_agent.agent import topics
from edge_agent.agent.topics import (
    BOTH,
    HOMEASSISTANT,
    HOMEASSISTANT_CLASSES,
    NORTH,
    SOUTH,
    TOPIC_CLASSES,
    TopicClass,
)
from edge_agent.config import GatewayConfig, load_config
from edge_agent.config.foreign import parse_pattern
from edge_agent.errors import ConfigError, EdgeError

CENTRE = "centre"  # reserved user name of the city platform, on both brokers
GATEWAY = "gateway"
DEVICE_KINDS = ("lamp", "camera", "wearable", "responder")
PUBLISHERS = (GATEWAY, CENTRE, *DEVICE_KINDS, HOMEASSISTANT)
SIDES = (SOUTH, NORTH, BOTH)


class AclError(EdgeError):
    """The registry or the gateway file cannot be expressed as an ACL (unknown publisher,
    a device class whose pattern does not name the device, two parties with one user name)."""


@dataclass(frozen=True)
class Rule:
    access: str  # "read", "write" or "readwrite"
    topic: str  # a topic filter, possibly with + / # / %u
    note: str  # why: the class(es) it serves

    def line(self, keyword: str) -> str:
        return f"{keyword} {self.access} {self.topic}"


# ----- what the registry means for each party ----------------------------------------------


def _check(topic_class: TopicClass) -> None:
    if topic_class.publisher not in PUBLISHERS:
        raise AclError(f"topic class {topic_class.name!r}: unknown publisher {topic_class.publisher!r}")
    if topic_class.side not in SIDES:
        raise AclError(f"topic class {topic_class.name!r}: unknown side {topic_class.side!r}")
    if topic_class.publisher in DEVICE_KINDS and topic_class.publisher not in topic_class.levels:
        raise AclError(
            f"topic class {topic_class.name!r}: published by a {topic_class.publisher} but its pattern "
            f"{topic_class.pattern!r} has no {{{topic_class.publisher}}} level, so no device can be limited to its own"
        )


def audience(topic_class: TopicClass) -> str:
    """Who reads a class: the gateway for what others publish; for what the gateway publishes,
    the device its south pattern names (``lamp/{lamp}/set`` -> that lamp), else the centre."""
    if topic_class.publisher != GATEWAY:
        return GATEWAY
    if topic_class in HOMEASSISTANT_CLASSES:
        return HOMEASSISTANT
    if topic_class.side == SOUTH:
        for level in topic_class.levels:
            if level in DEVICE_KINDS:
                return level
    return CENTRE


def _note(topic_class: TopicClass) -> str:
    reader = audience(topic_class)
    return f"{topic_class.name}: {topic_class.publisher} -> {reader}, {topic_class.payload}" + (
        " (retained)" if topic_class.retained else ""
    )


def _merge(rules: Iterable[Rule]) -> list[Rule]:
    """One rule per topic: read + write of the same filter become readwrite (first position kept)."""
    merged: dict[str, Rule] = {}
    for rule in rules:
        seen = merged.get(rule.topic)
        if seen is None:
            merged[rule.topic] = rule
        elif seen.access != rule.access:
            notes = seen.note if rule.note == seen.note else f"{seen.note}; {rule.note}"
            merged[rule.topic] = Rule("readwrite", rule.topic, notes)
    return list(merged.values())


def party_rules(
    party: str,
    gateway: str,
    sides: Sequence[str],
    classes: Sequence[TopicClass] = TOPIC_CLASSES,
    device: str | None = None,
    prefix: str | None = None,
) -> list[Rule]:
    """The rules of one party (``gateway``, ``centre``, a device kind or ``homeassistant``) for
    the classes on ``sides``; a device's rules are bound to its own id (``device``); a class
    outside the gateway root is bound under ``prefix`` (Home Assistant's discovery prefix)."""
    rules: list[Rule] = []
    for topic_class in classes:
        _check(topic_class)
        if topic_class.side not in sides:
            continue
        reader = audience(topic_class)
        own = {party: device} if device is not None else {}
        if topic_class.outside_root:
            if prefix is None:
                raise AclError(f"topic class {topic_class.name!r} lives outside the gateway root: it needs a prefix")
            topic = topics.ha_bind(topic_class, gateway, prefix, **own)
        else:
            topic = topics.bind(topic_class, gateway, **own)
        if topic_class.publisher == party:
            rules.append(Rule("write", topic, _note(topic_class)))
        if reader == party:
            rules.append(Rule("read", topic, _note(topic_class)))
    return _merge(rules)


# ----- the city (north) broker ------------------------------------------------------------------

CITY_HEADER = """\
# Mosquitto ACL for the district's city broker (see docs/SECURITY.md).
#
# GENERATED from the topic registry (edge_agent/agent/topics.py: TOPIC_CLASSES) by
#     python -m edge_agent.cli.acl --side north -o deploy/mosquitto/acl
# Do not edit by hand: tests/security/test_acl.py checks that this file is exactly the
# generator's output, so the topics the agent publishes and the ACL cannot drift apart (a
# denied publish is dropped silently under MQTT 3.1.1 and refused with 0x87 under MQTT 5).
#
# Everything not granted here is denied. %u is the authenticated user name: the client
# certificate's CN on port 8883 (use_identity_as_username), the password-file user on 8884.
# %c (the client id) is deliberately NOT used: a client picks its own client id, so a rule on
# %c would let any client claim any gateway's namespace.
#
# Naming rule (enforced at provisioning): a gateway's user name / certificate CN is exactly its
# gateway id (the [gateway] id of its config, [A-Za-z0-9_.-]); the name "centre" is reserved
# for the city platform.
#
# Pattern lines apply to every client, whatever "user" line precedes them.
#
# Only the north side lives here: devices, residents' wearables and responders' phones talk
# to their gateway's village broker (deploy/mosquitto/south.conf, with an ACL generated per
# gateway by `--side south`), never to the city broker.
"""

CITY_GATEWAYS = """
# --- every gateway: its own namespace only --------------------------------------------------
# What it publishes north (write) and what the centre sends it (read). It can never publish
# what the centre publishes (a policy, not even its own), nor touch another gateway's topics.
"""

CITY_CENTRE = """
# --- the city centre: reads what every gateway reports, the only writer of policies ----------
user centre
"""


def city_acl(classes: Sequence[TopicClass] = TOPIC_CLASSES) -> str:
    """The city broker's ACL (``deploy/mosquitto/acl``)."""
    north = (NORTH, BOTH)
    lines = [CITY_HEADER.rstrip("\n"), CITY_GATEWAYS.rstrip("\n")]
    for rule in party_rules(GATEWAY, "%u", north, classes):
        lines += [f"# {rule.note}", rule.line("pattern")]
    lines.append(CITY_CENTRE.rstrip("\n"))
    for rule in party_rules(CENTRE, "+", north, classes):
        lines += [f"# {rule.note}", rule.line("topic")]
    return "\n".join(lines) + "\n"


# ----- the village (south) broker of one gateway ------------------------------------------------


@dataclass(frozen=True)
class User:
    name: str
    role: str  # "gateway", "centre", or a device kind; "responder+centre" when merged
    rules: tuple[Rule, ...]


def devices(config: GatewayConfig) -> list[tuple[str, str]]:
    """(kind, id) of every party that connects to the south broker with its own user: lamps
    that speak MQTT (not those on an RS-485 bus), cameras, wearables not on the USB dongle,
    responders' phones."""
    gw = config.file
    found: list[tuple[str, str]] = [("lamp", lamp.id) for lamp in gw.lamps if lamp.bus is None]
    found += [("camera", camera.id) for camera in gw.cameras]
    found += [("wearable", wearable.id) for wearable in gw.wearables if wearable.link == "mqtt"]
    found += [("responder", responder.id) for responder in gw.responders]
    return found


def shares_broker(config: GatewayConfig) -> bool:
    """True when the north classes travel over the south broker (no uplink of its own)."""
    south, north = config.file.south.url, config.file.north.url
    return north in ("none", "", "embedded") or north == south


# what the broker dropped (a full per-client queue): the gateway counts and alarms it
BROKER_DROPPED_RULE = Rule("read", topics.BROKER_DROPPED, "the broker's count of messages it dropped")


def south_users(config: GatewayConfig, classes: Sequence[TopicClass] = TOPIC_CLASSES) -> list[User]:
    """Every user of the gateway's south broker with its rules: the gateway, each device, centre."""
    gateway = config.id
    sides: tuple[str, ...] = (SOUTH, BOTH, NORTH) if shares_broker(config) else (SOUTH, BOTH)
    users: dict[str, User] = {}

    def add(name: str, role: str, rules: list[Rule]) -> None:
        seen = users.get(name)
        if seen is None:
            users[name] = User(name, role, tuple(rules))
        elif {seen.role, role} == {"responder", CENTRE}:  # the district centre's own phone/console
            users[name] = User(name, "responder+centre", tuple(_merge([*seen.rules, *rules])))
        else:
            raise AclError(
                f"gateway {config.id}: user name {name!r} would be both the {seen.role} and a {role}; "
                "user names are ids and must be unique"
            )

    ha = config.file.homeassistant
    gateway_rules = party_rules(GATEWAY, gateway, sides, classes)
    if ha.enabled:
        ha_rules = party_rules(GATEWAY, gateway, (SOUTH,), HOMEASSISTANT_CLASSES, prefix=ha.prefix)
        gateway_rules = _merge([*gateway_rules, *ha_rules])
    gateway_rules = _merge([*gateway_rules, *foreign_rules(config, "south"), BROKER_DROPPED_RULE])
    add(config.id, GATEWAY, gateway_rules)
    for kind, device_id in devices(config):
        add(device_id, kind, party_rules(kind, gateway, sides, classes, device=device_id))
    add(CENTRE, CENTRE, party_rules(CENTRE, gateway, sides, classes))
    if ha.enabled:
        add(HOMEASSISTANT, HOMEASSISTANT, homeassistant_rules(config))
    order = {GATEWAY: 0, **{kind: i + 1 for i, kind in enumerate(DEVICE_KINDS)}}
    return sorted(users.values(), key=lambda u: order.get(u.role.split("+")[0], len(order)))


def foreign_rules(config: GatewayConfig, broker: str) -> list[Rule]:
    """The gateway's own rules for ``[[foreign_topics]]`` on one broker: read each pattern's
    filter, write each ``send`` topic of the policy (a ``{name}`` level becomes ``+``). The
    foreign devices' own users are not generated (their ids are not in the gateway file)."""
    from edge_agent.policy.model import Send

    same = broker == "south" and shares_broker(config)
    rules = [
        Rule("read", parse_pattern(spec.topic).filter, f"foreign topic {spec.name}: a device with its own schema")
        for spec in config.file.foreign_topics
        if spec.link == broker or (same and spec.link == "north")
    ]
    for rule in config.policy.rules:
        for action in rule.then:
            if isinstance(action, Send) and (action.link == broker or (same and action.link == "north")):
                topic = "/".join("+" if "{" in level else level for level in action.topic.split("/"))
                rules.append(Rule("write", topic, f"send: rule {rule.id}"))
    return rules


def homeassistant_rules(config: GatewayConfig) -> list[Rule]:
    """Home Assistant's user on the south broker: its side of the HA classes (light commands
    and its birth message written; states, events and the discovery configs read), plus what
    its MQTT integration does on its own: subscribe to the discovery filters of its prefix,
    clear the retained config of a device deleted in its UI, read the gateway's ``status``
    (availability of every entity, the gateway's connectivity sensor)."""
    gateway, prefix = config.id, config.file.homeassistant.prefix
    rules = party_rules(HOMEASSISTANT, gateway, (SOUTH,), HOMEASSISTANT_CLASSES, prefix=prefix)
    status = topics.BY_NAME["status"]
    rules.append(Rule("read", topics.bind(status, gateway), "status: gateway -> homeassistant, availability"))
    birth = topics.HA_BY_NAME["ha_birth"]
    rules.append(Rule("read", topics.ha_bind(birth, gateway, prefix), "ha_birth: its own birth message"))
    discovery = topics.HA_BY_NAME["ha_discovery"]
    note = "ha_discovery: homeassistant clears the config of a device deleted in its UI"
    rules.append(Rule("write", topics.ha_bind(discovery, gateway, prefix), note))
    for topic in topics.ha_discovery_filters(prefix):
        rules.append(Rule("read", topic, "homeassistant: its discovery subscription"))
    return _merge(rules)


SOUTH_HEADER = """\
# Mosquitto ACL for the village (south) broker of gateway {gateway} (see docs/DEPLOY.md).
#
# GENERATED from the topic registry (edge_agent/agent/topics.py: TOPIC_CLASSES) and this
# gateway's file by
#     python -m edge_agent.cli.acl --side south -c <gateway.toml> -o /etc/mosquitto/acl
# Regenerate it (and add the new users to the password file) whenever a device is added.
#
# Everything not granted here is denied. User names are the password_file users: the gateway
# agent is its gateway id; every MQTT device (lamp, camera, wearable hub) and every
# responder's phone is its id in the gateway file, and may publish only its own topics and
# read only its own commands; "centre" is the district centre. No pattern lines: every
# rule names its user, so a device can never claim another device's topics.{shared}
"""

SHARED_NOTE = """
#
# This gateway has no uplink of its own ([north] url = "{north}"): the north topics (policy,
# acks, rule events, rollout) travel over this broker, and "centre" may deliver a policy here."""


def south_acl(config: GatewayConfig, classes: Sequence[TopicClass] = TOPIC_CLASSES) -> str:
    """The south broker's ACL for one gateway (``/etc/mosquitto/south/acl``)."""
    shared = SHARED_NOTE.format(north=config.file.north.url) if shares_broker(config) else ""
    lines = [SOUTH_HEADER.format(gateway=config.id, shared=shared).rstrip("\n")]
    titles = {
        GATEWAY: "the gateway agent",
        "lamp": "lamp",
        "camera": "camera",
        "wearable": "wearable hub",
        "responder": "responder's phone",
        CENTRE: "the district centre",
        "responder+centre": "the district centre (also a responder)",
        HOMEASSISTANT: "Home Assistant ([homeassistant] enabled)",
    }
    for user in south_users(config, classes):
        lines += ["", f"# --- {titles[user.role]}: {user.name}", f"user {user.name}"]
        for rule in user.rules:
            lines += [f"# {rule.note}", rule.line("topic")]
    return "\n".join(lines) + "\n"


# ----- command line -----------------------------------------------------------------------------


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def render(side: str, config_path: Path | None, *, users: bool = False) -> str:
    """The text ``main`` prints: an ACL, or (``users``) one user name per line."""
    if side == NORTH:
        if users:
            return f"{CENTRE}\n"
        return city_acl()
    if config_path is None:
        raise AclError("--side south needs the gateway file (-c gateway.toml)")
    config = load_config(config_path)
    if users:
        return "".join(f"{user.name}\n" for user in south_users(config))
    return south_acl(config)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edge_agent.cli.acl",
        description="Generate a Mosquitto ACL from the topic registry: the city broker's (--side north) "
        "or one gateway's village broker's (--side south -c gateway.toml).",
    )
    parser.add_argument("--side", choices=(NORTH, SOUTH), required=True)
    parser.add_argument("-c", "--config", type=Path, help="the gateway's TOML file (--side south)")
    parser.add_argument("-o", "--output", type=Path, help="write here (atomically) instead of stdout")
    parser.add_argument("--users", action="store_true", help="list the user names the password file needs, one a line")
    args = parser.parse_args(argv)
    try:
        text = render(args.side, args.config, users=args.users)
    except ConfigError as exc:
        print(f"{len(exc.problems)} problem(s) in the configuration:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    except AclError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.output is not None:
        _write_atomically(args.output, text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
