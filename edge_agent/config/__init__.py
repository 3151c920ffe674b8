"""Gateway configuration: one TOML file per gateway, validated once into frozen typed objects.

Owns: loading a gateway file together with its policy (``load_config``) into a
``GatewayConfig``, and the checks that span sections (device ids, buses, brokers, HTTP, the
policy against the gateway). ``load_config`` raises ``ConfigError`` listing every problem, each
naming the file, the key path and what was expected. No raw dicts leave this package.
The file's sections are ``schema``'s; the ``[[foreign_topics]]`` entries and their pattern
parser are ``foreign``'s.
Must not import: edge_agent.agent, the engine, the transports, the store (everything reads the
config; it reads only the policy).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from edge_agent.config.foreign import foreign_topic_problems
from edge_agent.config.gammu import read_smsdrc
from edge_agent.config.push import read_push_url
from edge_agent.config.schema import Camera, GatewayFile, Http, Identity, Lamp, Shadow, Wearable
from edge_agent.errors import ConfigError, Problem
from edge_agent.policy.dispatch_state import parse_shift
from edge_agent.policy.model import Policy, convert_section, load_toml, parse_policy

__all__ = ["GatewayConfig", "load_config", "policy_problems", "public_url", "split_listen"]


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
        if gateway_file.modem is not None:
            try:
                read_smsdrc((path.parent / gateway_file.modem.smsdrc).resolve())
            except ConfigError as exc:
                problems.extend(exc.problems)
        problems.extend(_push_problems(gateway_file, path))
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


E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")


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
    phones: dict[str, str] = {}
    for i, responder in enumerate(gw.responders):
        try:
            parse_shift(responder.shift)
        except ValueError as exc:
            problems.append(Problem(source, f"responders[{i}].shift", str(exc)))
        if responder.phone is None:
            continue
        if not E164.match(responder.phone):
            problems.append(
                Problem(
                    source,
                    f"responders[{i}].phone",
                    f"expected an E.164 number: '+', country code and number, no spaces (e.g. "
                    f"+8613800138000), got {responder.phone!r}",
                )
            )
        # a number may be shared (a clinic's phone): a reply takes the alert for whichever of
        # them it was offered to (edge_agent/agent/replies.py)
        phones[responder.phone] = responder.id
    if phones and gw.modem is None:
        problems.append(Problem(source, "modem", "responders have phone numbers but there is no [modem] to reach them"))
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
    problems.extend(foreign_topic_problems(gw.foreign_topics, source))
    if policy is not None:
        problems.extend(policy_problems(gw, policy, source))
    return problems


def _push_problems(gw: GatewayFile, path: Path) -> list[Problem]:
    """Each ``push_url_file`` readable and holding one URL Apprise can send to; an ack link a
    phone can follow (``http.public_url`` when the face listens on a wildcard address)."""
    problems: list[Problem] = []
    for i, responder in enumerate(gw.responders):
        if responder.push_url_file is None:
            continue
        try:
            read_push_url(
                (path.parent / responder.push_url_file).resolve(),
                source=str(path),
                key=f"responders[{i}].push_url_file",
                responder=responder.id,
            )
        except ConfigError as exc:
            problems.extend(exc.problems)
    pushes = any(r.push_url_file is not None for r in gw.responders)
    try:
        unreachable = gw.http.public_url is None and public_url(gw.http) is None
    except ValueError:  # a bad http.listen: reported by itself
        unreachable = False
    if pushes and gw.http.enabled and unreachable:
        problems.append(
            Problem(
                str(path),
                "http.public_url",
                f"responders get pushes with an acknowledge link, but {gw.http.listen!r} is a wildcard "
                "address a phone cannot open: set the address it can (e.g. http://192.168.1.10:9180)",
            )
        )
    return problems


def public_url(http: Http, bound: str | None = None) -> str | None:
    """The base of the links to this gateway's HTTP face (no trailing ``/``): ``public_url``, else
    ``http://<listen>`` (``bound``: the ``host:port`` actually served, when that differs); None
    for a wildcard address (0.0.0.0, ::), which nobody can open."""
    if http.public_url is not None:
        return http.public_url.rstrip("/")
    host, port = split_listen(bound or http.listen)
    if host in ("0.0.0.0", "::", ""):  # a wildcard: bound to every address, named by none
        return None
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}"


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
    if http.public_url is not None and not re.fullmatch(r"https?://[^/\s?#]+(/[^\s?#]*)?", http.public_url):
        problems.append(
            Problem(source, "http.public_url", f"expected http(s)://host[:port][/path], got {http.public_url!r}")
        )
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
