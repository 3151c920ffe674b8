"""Gateway configuration: one TOML file per gateway, validated once into frozen typed objects.

Owns: the gateway file's schema (identity, brokers, devices, responders, serial buses, the
policy file it runs) and loading it together with its policy. ``load_config`` raises
``ConfigError`` listing every problem, each naming the file, the key path and what was
expected. No raw dicts leave this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from edge_agent.errors import ConfigError, Problem
from edge_agent.policy.dispatch_state import parse_shift
from edge_agent.policy.model import Name, Policy, convert_section, load_toml, parse_policy

Percent = Annotated[int, msgspec.Meta(ge=0, le=100)]


class Identity(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    id: Name
    district: Name = "naxi"
    latitude: Annotated[float, msgspec.Meta(ge=-90, le=90)]
    longitude: Annotated[float, msgspec.Meta(ge=-180, le=180)]
    timezone: str = "Asia/Shanghai"
    data_dir: str = "var/{id}"  # SQLite state; relative to the config file
    policy: str  # path of the policy file, relative to the config file


class Tls(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    ca: str
    cert: str | None = None
    key: str | None = None


class BrokerSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``url`` is ``embedded``, ``mqtt://host:port``, ``mqtts://host:port`` or ``none``.

    ``protocol`` is the MQTT version spoken to the broker: ``"5"`` (default) or ``"3.1.1"``.
    Under MQTT 5 a publish the broker refuses (ACL denial 0x87, quota exceeded 0x97, ...)
    comes back as a failure reason code in its PUBACK: the outbox keeps that message and an
    alarm is raised. MQTT 3.1.1 cannot detect it: a broker acknowledges a denied publish
    exactly like a delivered one (Mosquitto does for an ACL denial), so the outbox deletes it
    as delivered. Choose "3.1.1" only for a broker that speaks nothing newer. The embedded
    broker (amqtt) speaks only 3.1.1: ``url = "embedded"`` always uses 3.1.1.

    ``session_expiry`` (seconds, MQTT 5): how long the broker keeps the gateway's session
    (subscriptions, unacknowledged QoS 1 messages) after the link drops or the agent stops;
    the link always resumes it (clean start off), so nothing sent meanwhile is lost. Under
    3.1.1 the session is persistent too (clean session off) and the broker's own setting
    (Mosquitto: ``persistent_client_expiration``) decides how long it is kept.
    """

    url: str = "embedded"
    username: str | None = None
    password: str | None = None
    # a file (relative to the gateway file, mode 0600) whose first line is the password:
    # keeps the secret out of the config that is copied, diffed and attached to tickets
    password_file: str | None = None
    tls: Tls | None = None
    allow_plaintext_remote: bool = False
    keepalive: Annotated[int, msgspec.Meta(ge=5, le=3600)] = 30
    reconnect_min: Annotated[float, msgspec.Meta(gt=0)] = 0.5
    # capped low on purpose: the first alert must go out within 5 s of the link returning
    reconnect_max: Annotated[float, msgspec.Meta(gt=0)] = 4.0
    protocol: Literal["5", "3.1.1"] = "5"
    # at least a minute: a message the agent could not store is fetched again by resuming the
    # session after a short reconnect; 4294967295 (0xFFFFFFFF) never expires
    session_expiry: Annotated[int, msgspec.Meta(ge=60, le=0xFFFFFFFF)] = 7 * 24 * 3600


class Lamp(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    id: Name
    group: Name = "default"
    zone: Name | None = None
    rated_w: Annotated[float, msgspec.Meta(gt=0, le=1000)] = 100.0
    bus: Name | None = None  # a [buses.NAME] RS-485 bus; None means the lamp speaks MQTT
    unit: Annotated[int, msgspec.Meta(ge=1, le=247)] | None = None  # Modbus unit id on the bus


class Camera(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    id: Name
    zone: Name


class Point(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    x: float  # metres east of the gateway (the frame of [[responders]] x, y)
    y: float  # metres north of the gateway


class Wearable(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    id: Name
    # where the resident lives: an SOS or fall is dispatched from here (the nearest responder).
    # Unknown: the gateway's own position (0, 0), the same rule for cameras and lamps.
    home: Point | None = None
    zone: Name | None = None
    link: Literal["mqtt", "dongle"] = "mqtt"
    radio_id: Annotated[int, msgspec.Meta(ge=0, le=0xFFFFFFFF)] | None = None  # the wearable's id on the dongle link


class Responder(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    id: Name
    role: Name
    x: float = 0.0  # metres east of the gateway
    y: float = 0.0  # metres north of the gateway
    # daily shift in the gateway's local time, "08:00-20:00" (may wrap midnight): outside it the
    # responder is never chosen (edge_agent/policy/dispatch_state.py); the twin's scenario format
    shift: str = "00:00-24:00"


class Bus(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """An RS-485 lamp bus (Modbus RTU; the register map is hardware/REGISTERS.md)."""

    port: str
    baudrate: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200] = 9600
    inter_frame_delay: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None  # None: 3.5 characters
    timeout: Annotated[float, msgspec.Meta(gt=0, le=10)] = 0.5
    retries: Annotated[int, msgspec.Meta(ge=0, le=10)] = 2
    offline_after: Annotated[int, msgspec.Meta(ge=1, le=100)] = 3
    poll_interval: Annotated[float, msgspec.Meta(ge=0)] = 5.0
    silence_timeout: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 300  # node runs its program after this


class Dongle(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    port: str
    baudrate: int = 115200


class Trust(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The city centre's pinned public keys: the only signers of policy bundles we accept."""

    keys: list[str]  # PEM files or directories of PEM files, relative to the config file
    max_bundle_bytes: Annotated[int, msgspec.Meta(ge=1024, le=16 << 20)] = 256 * 1024


class Limits(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    max_payload_bytes: Annotated[int, msgspec.Meta(ge=64, le=1 << 20)] = 16 * 1024
    traces_per_rule: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 20
    outbox_max_mb: Annotated[float, msgspec.Meta(gt=0)] = 64.0
    # inbound messages waiting per link; QoS 0 beyond it is refused (logged and counted). Half
    # of it is the MQTT 5 Receive Maximum: QoS 1 messages the broker may send before our PUBACKs
    max_queued_messages: Annotated[int, msgspec.Meta(ge=10, le=1_000_000)] = 10_000


class Http(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The gateway's own HTTP face (edge_agent/http): ``/metrics`` and the status page.

    ``listen`` is ``host:port`` (port 0: any free port, tests). On a non-loopback address a
    token is required (``token``, or ``token_file`` relative to the gateway file, first line):
    requests carry it as ``Authorization: Bearer <token>`` or ``?token=``.
    """

    enabled: bool = True
    listen: str = "127.0.0.1:9180"
    token: str | None = None
    token_file: str | None = None


class HomeAssistant(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Home Assistant MQTT discovery on the south (village) broker (edge_agent/agent/homeassistant.py).

    Off unless ``enabled``. ``prefix`` is Home Assistant's discovery prefix (its birth message
    is ``<prefix>/status``). A light command from Home Assistant is an engine override, like a
    rule's ``set_lamp``: it reverts to the program after ``override_minutes`` (0: it holds
    until the next command). The broker user of Home Assistant is ``homeassistant``.
    """

    enabled: bool = False
    prefix: Annotated[str, msgspec.Meta(pattern=r"^[^/#+\x00]{1,64}(/[^/#+\x00]{1,64}){0,3}$")] = "homeassistant"
    override_minutes: Annotated[int, msgspec.Meta(ge=0, le=7 * 24 * 60)] = 60


class Shadow(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Shadow mode (edge_agent/agent/shadow.py): run a candidate policy beside the active one.

    The candidate decides on every input the active one handles but acts on nothing (its own
    store, ``shadow.sqlite3`` in the data dir); each local day the gateway reports where the two
    differ (``shadow/report``, ``edge-agent shadow report``). It stops after ``days`` days.
    """

    policy: str  # the candidate policy file, relative to the config file
    days: Annotated[int, msgspec.Meta(ge=1, le=366)] = 7


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


class GatewayFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    gateway: Identity
    south: BrokerSettings = BrokerSettings()
    north: BrokerSettings = BrokerSettings(url="none")
    lamps: list[Lamp] = []
    cameras: list[Camera] = []
    wearables: list[Wearable] = []
    responders: list[Responder] = []
    buses: dict[Name, Bus] = {}
    dongle: Dongle | None = None
    trust: Trust | None = None
    limits: Limits = Limits()
    http: Http = Http()
    homeassistant: HomeAssistant = HomeAssistant()
    shadow: Shadow | None = None
    foreign_topics: list[ForeignTopic] = []


@dataclass(frozen=True)
class GatewayConfig:
    """A validated gateway file and the policy it runs."""

    path: Path
    file: GatewayFile
    policy: Policy
    policy_bytes: bytes
    policy_path: Path
    shadow_policy: Policy | None = None  # [shadow] policy, parsed and checked against this gateway
    shadow_policy_bytes: bytes = b""

    @property
    def id(self) -> str:
        return self.file.gateway.id

    @property
    def data_dir(self) -> Path:
        raw = self.file.gateway.data_dir.replace("{id}", self.id)
        return (self.path.parent / raw).resolve()

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.file.gateway.timezone)


def load_config(path: str | Path) -> GatewayConfig:
    """Read and validate a gateway file and its policy; every problem in one ConfigError."""
    path = Path(path)
    source = str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError([Problem(source, "", f"cannot read: {exc.strerror}")]) from None
    raw = load_toml(data, source)
    problems: list[Problem] = []
    sections = {f.encode_name for f in msgspec.structs.fields(GatewayFile)}
    for key in raw:
        if key not in sections:
            problems.append(Problem(source, key, f"unknown section; expected one of {sorted(sections)}"))
    parsed: dict[str, object] = {}
    for field in msgspec.structs.fields(GatewayFile):
        if field.encode_name not in raw:
            if field.required:
                problems.append(Problem(source, field.encode_name, "missing required section"))
            continue
        value = raw[field.encode_name]
        if isinstance(value, list):  # validate list items one by one: report them all
            items = [
                convert_section(item, field.type.__args__[0], source, f"{field.encode_name}[{i}]", problems)
                for i, item in enumerate(value)
            ]
            parsed[field.encode_name] = [item for item in items if item is not None]
        else:
            converted = convert_section(value, field.type, source, field.encode_name, problems)
            if converted is not None:
                parsed[field.encode_name] = converted
    policy: Policy | None = None
    policy_bytes = b""
    policy_path = Path()
    identity = parsed.get("gateway")
    if isinstance(identity, Identity):
        try:
            ZoneInfo(identity.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            problems.append(Problem(source, "gateway.timezone", f"unknown time zone {identity.timezone!r}"))
    raw_gateway = raw.get("gateway")
    policy_ref = raw_gateway.get("policy") if isinstance(raw_gateway, dict) else None
    if isinstance(policy_ref, str):  # check the policy too, even when the gateway table has problems
        policy_path = (path.parent / policy_ref).resolve()
        try:
            policy_bytes = policy_path.read_bytes()
            policy = parse_policy(policy_bytes, str(policy_path))
        except OSError as exc:
            problems.append(Problem(source, "gateway.policy", f"cannot read {policy_path}: {exc.strerror}"))
        except ConfigError as exc:
            problems.extend(exc.problems)
    shadow_policy, shadow_bytes = _shadow_policy(path, parsed.get("shadow"), problems)
    if not problems:
        gateway_file = msgspec.convert(parsed, GatewayFile, from_attributes=True)
        problems.extend(_check_references(gateway_file, policy, source))
        if shadow_policy is not None:  # the candidate must fit this gateway too
            problems.extend(policy_problems(gateway_file, shadow_policy, f"{source} [shadow]"))
    if problems or policy is None:
        raise ConfigError(problems)
    return GatewayConfig(path, gateway_file, policy, policy_bytes, policy_path, shadow_policy, shadow_bytes)


def _shadow_policy(path: Path, shadow: object, problems: list[Problem]) -> tuple[Policy | None, bytes]:
    """The ``[shadow]`` candidate policy, read and parsed; its problems added to ``problems``."""
    if not isinstance(shadow, Shadow):
        return None, b""
    shadow_path = (path.parent / shadow.policy).resolve()
    try:
        data = shadow_path.read_bytes()
        return parse_policy(data, str(shadow_path)), data
    except OSError as exc:
        problems.append(Problem(str(path), "shadow.policy", f"cannot read {shadow_path}: {exc.strerror}"))
    except ConfigError as exc:
        problems.extend(exc.problems)
    return None, b""


def policy_problems(gw: GatewayFile, policy: Policy, source: str) -> list[Problem]:
    """What makes a policy unusable on this gateway (a lamp group without a program, a chain
    no responder can answer). Checked at load and again before a new bundle is accepted."""
    problems: list[Problem] = []
    for i, lamp in enumerate(gw.lamps):
        if policy.program_for_group(lamp.group) is None:
            problems.append(
                Problem(source, f"lamps[{i}].group", f"no program for group {lamp.group!r} and no 'default'")
            )
    roles = {r.role for r in gw.responders}
    for chain_name, chain in policy.chains.items():
        if not roles.intersection(chain.roles):
            problems.append(
                Problem(source, "responders", f"no responder has a role of chain {chain_name!r}: {chain.roles}")
            )
    return problems


def _check_references(gw: GatewayFile, policy: Policy | None, source: str) -> list[Problem]:
    problems: list[Problem] = []
    for which, broker in (("south", gw.south), ("north", gw.north)):
        if broker.password is not None and broker.password_file is not None:
            problems.append(Problem(source, f"{which}.password_file", "set either password or password_file, not both"))
    seen: dict[str, str] = {}
    sections: tuple[tuple[str, list[Lamp] | list[Camera] | list[Wearable]], ...] = (
        ("lamps", gw.lamps),
        ("cameras", gw.cameras),
        ("wearables", gw.wearables),
    )
    for section, devices in sections:
        for i, device in enumerate[Lamp | Camera | Wearable](devices):
            if device.id in seen:
                problems.append(
                    Problem(
                        source,
                        f"{section}[{i}].id",
                        f"duplicate device id {device.id!r} (also in {seen[device.id]})",
                    )
                )
            seen[device.id] = section
    units: set[tuple[str, int]] = set()
    for i, lamp in enumerate(gw.lamps):
        if lamp.bus is not None:
            if lamp.bus not in gw.buses:
                problems.append(
                    Problem(
                        source,
                        f"lamps[{i}].bus",
                        f"unknown bus {lamp.bus!r}; defined: {sorted(gw.buses)}",
                    )
                )
            if lamp.unit is None:
                problems.append(Problem(source, f"lamps[{i}].unit", "a lamp on a bus needs a Modbus unit id"))
            elif (lamp.bus, lamp.unit) in units:
                problems.append(
                    Problem(
                        source,
                        f"lamps[{i}].unit",
                        f"unit {lamp.unit} used twice on bus {lamp.bus!r}",
                    )
                )
            else:
                units.add((lamp.bus, lamp.unit))
    for i, responder in enumerate(gw.responders):
        try:
            parse_shift(responder.shift)
        except ValueError as exc:
            problems.append(Problem(source, f"responders[{i}].shift", str(exc)))
    for i, wearable in enumerate(gw.wearables):
        if wearable.link == "dongle" and gw.dongle is None:
            problems.append(Problem(source, f"wearables[{i}].link", "link = 'dongle' needs a [dongle] section"))
        if wearable.link == "dongle" and wearable.radio_id is None:
            problems.append(Problem(source, f"wearables[{i}].radio_id", "a wearable on the dongle needs its radio_id"))
    for name, broker in (("south", gw.south), ("north", gw.north)):
        url = broker.url
        if url in ("embedded", "none"):
            if name == "south" and url == "none":
                problems.append(Problem(source, "south.url", "the south broker cannot be 'none'"))
            continue
        if not url.startswith(("mqtt://", "mqtts://")):
            problems.append(
                Problem(
                    source,
                    f"{name}.url",
                    f"expected 'embedded', 'none', mqtt://host:port or mqtts://host:port, got {url!r}",
                )
            )
    problems.extend(_http_problems(gw.http, source))
    from edge_agent.agent.foreign import problems as foreign_problems  # only its small parser

    problems.extend(foreign_problems(gw.foreign_topics, source))
    if policy is not None:
        problems.extend(policy_problems(gw, policy, source))
    return problems


def split_listen(listen: str) -> tuple[str, int]:
    """``"127.0.0.1:9180"`` -> ("127.0.0.1", 9180); ``"[::1]:9180"`` -> ("::1", 9180). ValueError."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected host:port, got {listen!r}")
    return host.strip("[]"), int(port)


def _http_problems(http: Http, source: str) -> list[Problem]:
    problems: list[Problem] = []
    try:
        host, _ = split_listen(http.listen)
    except ValueError as exc:
        return [Problem(source, "http.listen", str(exc))]
    if http.token is not None and http.token_file is not None:
        problems.append(Problem(source, "http.token_file", "set either token or token_file, not both"))
    if http.token is not None and len(http.token) < 16:
        problems.append(Problem(source, "http.token", "a token of at least 16 characters"))
    loopback = host == "localhost" or host.startswith("127.") or host == "::1"
    if http.enabled and not loopback and http.token is None and http.token_file is None:
        problems.append(
            Problem(source, "http.listen", f"{host!r} is not loopback: set http.token_file (or http.token)")
        )
    return problems
