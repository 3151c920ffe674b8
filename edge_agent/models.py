"""Typed, versioned message schemas (MQTT payloads), the engine's event type and its alerts.

Owns: what each topic carries and how bytes become typed messages. Every payload is JSON with
``"v": 1``. A malformed, unknown, wrong-version or oversized payload raises ``ProtocolError``
with a short countable ``reason``; callers count and log it and go on. A value outside physical
bounds (a level over 100, a negative or absurd reading, a device time before 2020 or more than
``MAX_AHEAD_S`` ahead of the gateway's clock: ``check_device_time``) is ``implausible``, the
message naming the field.
Must not import: the engine, the policy, transports, store or agent.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec

from edge_agent.errors import ProtocolError

SCHEMA_VERSION = 1
MAX_PAYLOAD_BYTES = 16 * 1024

EARLIEST_TS = 1_577_836_800.0  # 2020-01-01 UTC: no device of ours reports from before
MAX_AHEAD_S = 86_400.0  # a device clock this far ahead of the gateway's is wrong, not early

Level = Annotated[float, msgspec.Meta(ge=0, le=100)]
NonNegative = Annotated[float, msgspec.Meta(ge=0)]
DeviceTime = Annotated[float, msgspec.Meta(ge=EARLIEST_TS)]
Count = Annotated[int, msgspec.Meta(ge=0)]


class Message(msgspec.Struct, frozen=True, forbid_unknown_fields=False, kw_only=True):
    v: Literal[1]
    ts: DeviceTime | None = None  # device time (epoch seconds); the gateway stamps its own on receipt


# ----- south: devices -> gateway -------------------------------------------------------------
class LampState(Message, frozen=True, kw_only=True):
    on: bool
    level: Level
    power_w: Annotated[float, msgspec.Meta(ge=0, le=5_000)] = 0.0  # a street lamp, not a substation
    energy_wh: Annotated[float, msgspec.Meta(ge=0, le=1e9)] = 0.0
    burn_hours: Annotated[float, msgspec.Meta(ge=0, le=500_000)] = 0.0  # 57 years
    faults: Annotated[int, msgspec.Meta(ge=0, le=0xFFFF)] = 0
    policy_version: Count | None = None


class CameraEvent(Message, frozen=True, kw_only=True):
    detection: Literal["motion", "person", "vehicle"]
    zone: str | None = None
    confidence: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None


class DeviceStatus(Message, frozen=True, kw_only=True):
    online: bool


EMERGENCY_EVENTS = frozenset({"sos", "fall"})  # wearable events never refused for their clock, nor swallowed


class WearableEvent(Message, frozen=True, kw_only=True):
    ts: float | None = None  # not bounded: an SOS is taken whatever its clock says (its ts is not used)
    event: Literal["sos", "fall", "geofence_exit"]
    seq: Count | None = None


class WearableVitals(Message, frozen=True, kw_only=True):
    heart_rate: Annotated[int, msgspec.Meta(ge=0, le=300)] | None = None
    battery: Annotated[int, msgspec.Meta(ge=0, le=100)] | None = None


class Heartbeat(Message, frozen=True, kw_only=True):
    battery: Annotated[int, msgspec.Meta(ge=0, le=100)] | None = None


class ResponderAck(Message, frozen=True, kw_only=True):
    alert_id: str


class ResponderResolved(Message, frozen=True, kw_only=True):
    """The busy responder is done with the alert: available again (``responder/<id>/resolved``)."""

    alert_id: str


# ----- gateway -> devices / responders / north -----------------------------------------------
class LampCommand(Message, frozen=True, kw_only=True):
    level: Level
    cmd_id: str
    reason: str = ""


class LampProgram(Message, frozen=True, kw_only=True):
    """The lamp's own copy of its program (retained): what it runs if the gateway goes quiet."""

    policy_version: int
    program: str
    on_kind: int
    on_value: float
    off_kind: int
    off_value: float
    level: float
    steps: list[tuple[float, float]]  # (clock minute, level), in night order
    boost_level: float
    boost_minutes: float
    latitude: float
    longitude: float


class PolicyAck(Message, frozen=True, kw_only=True):
    gateway: str
    status: Literal["accepted", "already_active", "rejected"]
    version: int | None = None
    reason: str | None = None
    detail: str | None = None


AlertStatus = Literal[
    "raised", "notified", "escalated", "queued", "acknowledged", "resolved", "resolve_timeout", "unacknowledged"
]


class AlertMessage(Message, frozen=True, kw_only=True):
    alert_id: str
    gateway: str
    device: str
    kind: str
    priority: Annotated[int, msgspec.Meta(ge=1, le=5)]
    message: str
    rule: str
    status: AlertStatus
    responder: str | None = None
    step: int = 0


# (kind, channel) of a south topic -> schema
SOUTH_SCHEMAS: dict[tuple[str, str], type[Message]] = {
    ("lamp", "state"): LampState,
    ("camera", "event"): CameraEvent,
    ("camera", "status"): DeviceStatus,
    ("wearable", "event"): WearableEvent,
    ("wearable", "vitals"): WearableVitals,
    ("wearable", "heartbeat"): Heartbeat,
}

_decoders: dict[type[Message], msgspec.json.Decoder[Any]] = {}
_encoder = msgspec.json.Encoder()


def decode_payload(schema: type[Message], payload: bytes, *, where: str) -> Any:
    """Bytes -> typed message, or ProtocolError(reason) naming the topic and the field."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ProtocolError("oversized", where=where, detail=f"{len(payload)} bytes")
    decoder = _decoders.get(schema)
    if decoder is None:
        decoder = _decoders[schema] = msgspec.json.Decoder(schema)
    try:
        return decoder.decode(payload)
    except msgspec.ValidationError as exc:
        text = str(exc)
        reason = "bad_version" if "`$.v`" in text else "implausible" if _OUT_OF_BOUNDS.match(text) else "schema"
        raise ProtocolError(reason, where=where, detail=_safe_detail(exc)) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise ProtocolError("bad_json", where=where, detail=str(exc)) from None
    except RecursionError:
        raise ProtocolError("too_deep", where=where, detail="nesting too deep") from None


_OUT_OF_BOUNDS = re.compile(r"Expected `\w+` [<>]=? ")  # msgspec's words for a value past a bound


def check_device_time(message: Message, now: float, *, where: str) -> None:
    """ProtocolError("implausible") if the device's time is before ``EARLIEST_TS`` or more than
    ``MAX_AHEAD_S`` ahead of the gateway's ``now``. Never for an SOS or a fall (refusing one for
    a wrong clock would lose it; the gateway stamps its own time), and never ahead of a gateway
    clock that is itself implausible (not set yet after a power cut)."""
    ts = message.ts
    if ts is None or (isinstance(message, WearableEvent) and message.event in EMERGENCY_EVENTS):
        return
    if ts < EARLIEST_TS:
        raise ProtocolError("implausible", where=where, detail="before 2020 - at `$.ts`")
    if now >= EARLIEST_TS and ts > now + MAX_AHEAD_S:
        ahead = ts - now
        raise ProtocolError("implausible", where=where, detail=f"{ahead:.0f} s ahead of the gateway clock - at `$.ts`")


_SAFE_PREFIXES = ("Expected ", "Object missing required field ")


def _safe_detail(exc: msgspec.ValidationError) -> str:
    """msgspec's message without payload values (it echoes invalid enum values verbatim,
    and a payload may carry a resident's name): what was wrong and where, never the value."""
    message, _, path = str(exc).partition(" - at ")
    if not message.startswith(_SAFE_PREFIXES):
        message = "invalid value"
    return f"{message} - at {path}" if path else message


def encode(message: msgspec.Struct) -> bytes:
    return _encoder.encode(message)


class Event(msgspec.Struct, frozen=True, gc=False):
    """What the engine sees: one thing that happened to one device, with its values.

    ``name`` is e.g. ``sos``, ``fall``, ``geofence_exit``, ``person``, ``vehicle``, ``motion``,
    ``state``, ``vitals``, ``heartbeat``, ``online``, ``offline``, ``fault``, ``ack``.
    """

    device: str
    kind: str
    name: str
    ts: float
    zone: str | None = None
    group: str | None = None
    data: dict[str, Any] = {}


class Alert(msgspec.Struct, frozen=True, kw_only=True):
    """An alert as the engine raised it and dispatch last changed it: one row of the store's
    ``alerts`` table (edge_agent/store/alerts.py), carried by the engine's ``AlertChanged`` and
    ``NotifyResponder`` effects. What leaves the gateway is its ``AlertMessage``. A change is a
    new value (``msgspec.structs.replace``)."""

    alert_id: str
    created: float  # epoch seconds: raised
    device: str
    rule: str
    priority: int
    message: str
    chain: str | None  # the responder chain notified, or None (a plain alert)
    step: int  # the chain's step now notified
    responder: str | None  # who holds it (notified, acknowledged), else None
    status: AlertStatus
    updated: float  # epoch seconds: the last change
