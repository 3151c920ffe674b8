"""One gateway-config builder for tests, benchmarks, the chaos suite and the fleet run.

Owns: turning Python data into a gateway TOML file (``[gateway]``, ``[south]``, ``[north]``,
devices, responders and any other section ``edge_agent.config`` knows), with the layout the
tests have always used as defaults: the Naxi village coordinates, ``data_dir = "state"``,
``policy = "policy.toml"`` beside the gateway file, three village lamps, a camera, a wearable
and two doctors. ``write_gateway_config`` also writes the policy file when given its text.

The TOML comes from a tiny emitter (``toml_dumps``) for the value types a gateway file needs:
strings, booleans, integers, floats, paths, lists of scalars, tables, inline tables inside
lists, and arrays of tables.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any

Section = Mapping[str, Any]

# the village of tests/agent/harness.py: what most tests and tools run
VILLAGE_LAMPS: tuple[Section, ...] = (
    {"id": "L1", "group": "village", "zone": "square"},
    {"id": "L2", "group": "village", "zone": "square"},
    {"id": "L3", "group": "village", "zone": "lane"},
)
VILLAGE_CAMERAS: tuple[Section, ...] = ({"id": "C1", "zone": "square"},)
VILLAGE_WEARABLES: tuple[Section, ...] = ({"id": "W1", "zone": "lane"},)
DOCTORS: tuple[Section, ...] = (
    {"id": "doc1", "role": "village_doctor"},
    {"id": "doc2", "role": "township_doctor"},
)

# a policy that fits the village above: lamps on at dusk, a medical chain of both doctors
POLICY_HEAD = """
[policy]
name = "test"

[programs.village]
on = "sunset+10m"
off = "sunrise-15m"
level = 80
steps = [ { at = "22:00", level = 50 }, { at = "00:00", level = 30 } ]
boost = { level = 100, minutes = 3 }

[assign]
default = "village"

[chains.medical]
roles = ["village_doctor", "township_doctor"]
ack_timeout = "2m"
"""

SOS_RULE = """
[[rules]]
id = "sos"
when = { trigger = "event", event = "sos", kind = "wearable" }
then = [ { action = "alert", priority = 1, message = "SOS from {device}", notify = "medical" } ]
"""

DEFAULT_POLICY = POLICY_HEAD + SOS_RULE

LATITUDE = 28.77
LONGITUDE = 105.37
TIMEZONE = "Asia/Shanghai"


def gateway_toml(
    gateway_id: str,
    *,
    south_url: str,
    north_url: str = "none",
    lamps: Sequence[Section] = VILLAGE_LAMPS,
    wearables: Sequence[Section] = VILLAGE_WEARABLES,
    cameras: Sequence[Section] = VILLAGE_CAMERAS,
    responders: Sequence[Section] = DOCTORS,
    policy: str | PurePath = "policy.toml",
    data_dir: str | PurePath = "state",
    district: str | None = None,
    latitude: float = LATITUDE,
    longitude: float = LONGITUDE,
    timezone: str = TIMEZONE,
    south: Section | None = None,
    north: Section | None = None,
    trust_keys: Sequence[str | PurePath] | None = None,
    limits: Section | None = None,
    buses: Mapping[str, Section] | None = None,
    dongle: Section | None = None,
    http: Section | None = None,
    extra: Section | None = None,
) -> str:
    """The text of a gateway file.

    ``south`` / ``north`` add keys to those tables (``reconnect_min``, ``username``,
    ``tls = {"ca": ...}`` becomes ``[south.tls]``); ``trust_keys`` makes ``[trust] keys``;
    ``limits``, ``buses`` (name -> bus) and ``dongle`` are those sections; ``http`` defaults
    to a free loopback port (many gateways share a test machine; the field default is 9180); ``extra`` adds (or,
    for a key already built, replaces) whole top-level sections. Device and responder entries
    are mappings of their fields (``{"id": "L1", "zone": "square"}``); a None value anywhere
    leaves that key out (the schema's default applies).
    """
    identity: dict[str, Any] = {"id": gateway_id}
    if district is not None:
        identity["district"] = district
    identity |= {"latitude": latitude, "longitude": longitude, "timezone": timezone}
    identity |= {"data_dir": data_dir, "policy": policy}
    doc: dict[str, Any] = {
        "gateway": identity,
        "south": {"url": south_url, **(south or {})},
        "north": {"url": north_url, **(north or {})},
    }
    if limits is not None:
        doc["limits"] = dict(limits)
    if trust_keys is not None:
        doc["trust"] = {"keys": list(trust_keys)}
    if buses is not None:
        doc["buses"] = dict(buses)
    if dongle is not None:
        doc["dongle"] = dict(dongle)
    doc["http"] = dict(http) if http is not None else {"listen": "127.0.0.1:0"}
    for name, entries in (("lamps", lamps), ("cameras", cameras), ("wearables", wearables)):
        if entries:
            doc[name] = list(entries)
    if responders:
        doc["responders"] = list(responders)
    doc |= dict(extra or {})
    return toml_dumps(doc)


def write_gateway_config(
    directory: Path,
    gateway_id: str,
    *,
    policy_text: str | bytes | None = DEFAULT_POLICY,
    filename: str = "gateway.toml",
    **options: Any,
) -> Path:
    """Write ``directory/filename`` (and the policy file, unless ``policy_text`` is None);
    ``options`` are those of ``gateway_toml``. Returns the gateway file's path."""
    directory.mkdir(parents=True, exist_ok=True)
    if policy_text is not None:
        policy_path = directory / Path(options.get("policy", "policy.toml"))
        if isinstance(policy_text, bytes):
            policy_path.write_bytes(policy_text)
        else:
            policy_path.write_text(policy_text)
    path = directory / filename
    path.write_text(gateway_toml(gateway_id, **options))
    return path


def numbered(prefix: str, count: int, *, start: int = 1, **fields: Any) -> list[dict[str, Any]]:
    """``count`` entries ``{"id": f"{prefix}{i}", **fields}`` for i from ``start``."""
    return [{"id": f"{prefix}{i}", **fields} for i in range(start, start + count)]


# ----- a TOML emitter for what a gateway file holds -------------------------------------------------
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def toml_dumps(doc: Mapping[str, Any]) -> str:
    """TOML for ``doc``: scalars and lists of scalars as ``key = value``, mappings as tables,
    non-empty lists of mappings as arrays of tables (mappings nested in other values inline)."""
    lines: list[str] = []
    _table(doc, (), lines)
    return "\n".join(lines).lstrip("\n") + "\n"


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list | tuple) and bool(value) and all(isinstance(v, Mapping) for v in value)


def _table(table: Mapping[str, Any], path: tuple[str, ...], lines: list[str]) -> None:
    nested = []
    for key, value in table.items():
        if value is None:
            continue  # TOML has no null: an absent key takes the schema's default
        if isinstance(value, Mapping) or _is_table_array(value):
            nested.append((key, value))
        else:
            lines.append(f"{_key(key)} = {_value(value)}")
    for key, value in nested:
        here = (*path, key)
        header = ".".join(_key(k) for k in here)
        if isinstance(value, Mapping):
            lines += ["", f"[{header}]"]
            _table(value, here, lines)
        else:
            for item in value:
                lines += ["", f"[[{header}]]"]
                _table(item, here, lines)


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _string(key)


def _string(text: str) -> str:
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, PurePath):
        return _string(str(value))
    if isinstance(value, Mapping):
        items = ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items() if v is not None)
        return "{ " + items + " }" if items else "{}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}: {value!r}")
