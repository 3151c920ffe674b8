"""Home Assistant on the village broker: MQTT device discovery, states, and light commands.

Owns (only with ``[homeassistant] enabled = true``): the retained device-discovery configs
(``<prefix>/device/<id>/config``: ``dev``, ``o``, ``cmps``) of every lamp (a JSON-schema
``light`` with brightness), wearable (an ``event`` for sos / fall / geofence_exit, heart-rate
and battery sensors), camera (a motion ``binary_sensor``) and of the gateway itself (a
connectivity ``binary_sensor`` on its ``status``, which is also every entity's availability);
announcing them once per connect of the south link and once per Home Assistant birth
(``<prefix>/status`` = ``online``), coalesced so a burst of births is one announcement; the
states Home Assistant shows, published when a device reports (from any transport: MQTT,
RS-485 bus, dongle); and a light command from Home Assistant, which becomes an engine
override (``Engine.command_lamp``, the path of a rule's ``set_lamp``: persisted, traced,
reverted to the program after ``override_minutes``) whose ``LampSet`` goes out like any other.

Every topic is built by ``topics`` (``HOMEASSISTANT_CLASSES``). Must not import: the app or
the other flows but ``outbound`` (effects) and ``runtime``.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Annotated, Any, Literal

import msgspec

import edge_agent
from edge_agent.agent import topics
from edge_agent.agent.context import GatewayContext
from edge_agent.agent.outbound import Outbound
from edge_agent.agent.runtime import publish_quietly
from edge_agent.config import GatewayConfig
from edge_agent.engine import LampSet
from edge_agent.errors import ProtocolError
from edge_agent.models import Event

log = logging.getLogger("edge_agent")

ONLINE, OFFLINE = "online", "offline"  # the gateway's status and Home Assistant's birth / will
WEARABLE_EVENTS = ("sos", "fall", "geofence_exit")  # models.WearableEvent.event
MOTION_OFF_DELAY_S = 30  # Home Assistant turns a camera's motion sensor off after this
FULL = 100.0  # "ON" without a brightness: full level
_NODE_ID = re.compile(r"[^A-Za-z0-9_-]")  # a discovery topic's <id> level: [A-Za-z0-9_-]


class LightCommand(msgspec.Struct, frozen=True):
    """Home Assistant's JSON-schema light command, ``brightness_scale`` 100 (other keys ignored)."""

    state: Literal["ON", "OFF"] | None = None
    brightness: Annotated[float, msgspec.Meta(ge=0, le=100)] | None = None

    @property
    def level(self) -> float:
        if self.state == "OFF":
            return 0.0
        return FULL if self.brightness is None else float(self.brightness)


_command = msgspec.json.Decoder(LightCommand)


def decode_command(payload: bytes, where: str) -> LightCommand:
    try:
        command = _command.decode(payload)
    except msgspec.ValidationError as exc:
        raise ProtocolError("schema", where=where, detail=str(exc).partition(" - at ")[0]) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise ProtocolError("bad_json", where=where, detail=str(exc)) from None
    if command.state is None and command.brightness is None:
        raise ProtocolError("schema", where=where, detail="neither state nor brightness")
    return command


def light_state(on: bool, level: float) -> dict[str, Any]:
    """The JSON-schema state of a lamp as it reported itself."""
    lit = on and level > 0
    return {"state": "ON" if lit else "OFF", "brightness": round(level), "color_mode": "brightness"}


def node_id(*parts: str) -> str:
    """A discovery id from parts (gateway, kind, device): Home Assistant allows [A-Za-z0-9_-]."""
    return _NODE_ID.sub("_", "_".join(parts))


class HomeAssistant:
    def __init__(self, context: GatewayContext, outbound: Outbound) -> None:
        config = context.config
        settings = config.file.homeassistant
        self.gateway = config.id
        self.prefix = settings.prefix
        self.override_s: float | None = settings.override_minutes * 60.0 or None
        self.clock = context.clock
        self.store = context.store
        self.active = context.active
        self.outbound = outbound
        self.links = context.links
        self.stats = context.stats
        self.background = context.background
        self.timers_changed = context.timers_changed
        self.max_payload = context.limits.max_payload_bytes
        self.configs = discovery_configs(config)  # (topic, payload): fixed for the agent's life
        self.announcements = 0  # completed announcements of every config
        self._announcing: asyncio.Task[None] | None = None
        self._again = False
        self._lamps = {lamp.id for lamp in config.file.lamps}
        self._lamp_states: dict[str, bytes] = {}  # last state published per lamp
        self._vitals: dict[str, dict[str, int | float]] = {}  # wearable -> last heart rate, battery

    def subscriptions(self) -> list[tuple[str, int]]:
        return topics.ha_subscriptions(self.gateway, self.prefix)

    # ----- discovery ------------------------------------------------------------------------
    def announce(self) -> None:
        """Publish every discovery config (retained), once: called on each south connect and
        each Home Assistant birth; a call while an announcement runs makes one more after it."""
        if self._announcing is not None and not self._announcing.done():
            self._again = True
            return
        self._announcing = asyncio.get_running_loop().create_task(self._announce())

    async def _announce(self) -> None:
        while True:
            self._again = False
            link = self.links.south
            if link is None or not link.connected:
                return  # the next connect announces
            for topic, payload in self.configs:
                await publish_quietly(link, topic, payload, retain=True)
            self.stats.published["ha_discovery"] += len(self.configs)
            self.announcements += 1
            if not self._again:
                return

    # ----- inbound --------------------------------------------------------------------------
    def route(self, topic: str, payload: bytes) -> bool | None:
        """Handle a Home Assistant message: None if ``topic`` is not one; else whether its
        transaction was durable (never: an override is committed without fsync, like a lamp
        state). Raises ProtocolError for a bad command."""
        matched = topics.ha_match(self.gateway, self.prefix, topic)
        if matched is None or not matched[0].inbound:
            return None
        topic_class, levels = matched
        if len(payload) > self.max_payload:
            raise ProtocolError("oversized", where=topic, detail=f"{len(payload)} bytes")
        if topic_class.name == "ha_birth":
            if payload.strip() == ONLINE.encode():
                self.announce()
            return False
        lamp = levels["lamp"]
        if lamp not in self._lamps:
            raise ProtocolError("unknown_device", where=topic, detail=f"lamp {lamp!r} is not in the config")
        command = decode_command(payload, topic)
        engine = self.active.engine
        with self.store.transaction():
            effects = engine.command_lamp(lamp, command.level, topics.HOMEASSISTANT, self.clock.now(), self.override_s)
            self.outbound.apply(effects)
        self.timers_changed.set()  # the override's revert is a new timer
        if not any(isinstance(effect, LampSet) and effect.lamp == lamp for effect in effects):
            # the lamp is already at that level and will not report: answer with what it last said
            last = self._lamp_states.get(lamp)
            if last is not None:
                self._publish(topics.build_ha(self.gateway, "ha_lamp_state", lamp=lamp), last, retain=True)
        return False

    # ----- states ---------------------------------------------------------------------------
    def observe(self, event: Event) -> None:
        """A device event the gateway committed (any transport): the state Home Assistant shows."""
        gateway, device = self.gateway, event.device
        if event.kind == "lamp" and event.name == "state":
            data = event.data
            body = msgspec.json.encode(light_state(bool(data.get("on")), float(data.get("level", 0.0))))
            self._lamp_states[device] = body
            self._publish(topics.build_ha(gateway, "ha_lamp_state", lamp=device), body, retain=True)
        elif event.kind == "wearable" and event.name in WEARABLE_EVENTS:
            body = msgspec.json.encode({"event_type": event.name})
            self._publish(topics.build_ha(gateway, "ha_wearable_event", wearable=device), body, retain=False)
        elif event.kind == "wearable" and event.name in ("vitals", "heartbeat"):
            known = self._vitals.setdefault(device, {})
            for key in ("heart_rate", "battery"):
                value = event.data.get(key)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    known[key] = value
            if known:
                self._publish(
                    topics.build_ha(gateway, "ha_wearable_state", wearable=device),
                    msgspec.json.encode(known),
                    retain=True,
                )
        elif event.kind == "camera" and event.name in ("motion", "person", "vehicle"):
            self._publish(topics.build_ha(gateway, "ha_camera_motion", camera=device), b"ON", retain=False)

    def _publish(self, topic: str, payload: bytes, *, retain: bool) -> None:
        link = self.links.south
        if link is None or not link.connected:
            return  # retained states are published again at the device's next report
        self.background.spawn(publish_quietly(link, topic, payload, retain=retain))


# ----- the discovery configs ----------------------------------------------------------------------


def discovery_configs(config: GatewayConfig) -> list[tuple[str, bytes]]:
    """(topic, retained payload) of every device's discovery config: the gateway first."""
    gw = config.file
    gateway = config.id
    prefix = gw.homeassistant.prefix
    status = topics.status(gateway)
    gateway_ids = f"{gw.gateway.district}-{gateway}"
    origin = {"name": "edge-agent", "sw": edge_agent.__version__}
    available = {"availability_topic": status, "payload_available": ONLINE, "payload_not_available": OFFLINE}

    def device(kind: str, ident: str, name: str, model: str, zone: str | None) -> dict[str, Any]:
        found: dict[str, Any] = {"ids": [f"{gateway_ids}-{kind}-{ident}"], "name": name, "mdl": model}
        found["via_device"] = gateway_ids
        if zone:
            found["sa"] = zone
        return found

    def uid(kind: str, ident: str, component: str) -> str:
        return f"{gateway_ids}-{kind}-{ident}-{component}"

    out: list[tuple[str, bytes]] = []

    def add(parts: tuple[str, ...], body: dict[str, Any]) -> None:
        out.append((topics.ha_discovery(prefix, node_id(*parts)), msgspec.json.encode(body)))

    add(
        (gateway, "gateway"),
        {
            "dev": {"ids": [gateway_ids], "name": f"Gateway {gateway}", "mdl": "edge gateway"},
            "o": origin,
            "cmps": {
                "connectivity": {
                    "p": "binary_sensor",
                    "unique_id": f"{gateway_ids}-connectivity",
                    "name": "Connectivity",
                    "device_class": "connectivity",
                    "entity_category": "diagnostic",
                    "state_topic": status,
                    "payload_on": ONLINE,
                    "payload_off": OFFLINE,
                }
            },
            "qos": 1,
        },
    )
    for lamp in gw.lamps:
        add(
            (gateway, "lamp", lamp.id),
            {
                "dev": device("lamp", lamp.id, f"Lamp {lamp.id}", "street lamp", lamp.zone),
                "o": origin,
                "cmps": {
                    "light": {
                        "p": "light",
                        "unique_id": uid("lamp", lamp.id, "light"),
                        "name": None,  # the device's name
                        "schema": "json",
                        "command_topic": topics.build_ha(gateway, "ha_lamp_set", lamp=lamp.id),
                        "state_topic": topics.build_ha(gateway, "ha_lamp_state", lamp=lamp.id),
                        "supported_color_modes": ["brightness"],
                        "brightness_scale": 100,
                    }
                },
                **available,
                "qos": 1,
            },
        )
    for wearable in gw.wearables:
        state = topics.build_ha(gateway, "ha_wearable_state", wearable=wearable.id)
        add(
            (gateway, "wearable", wearable.id),
            {
                "dev": device("wearable", wearable.id, f"Wearable {wearable.id}", "wearable", wearable.zone),
                "o": origin,
                "cmps": {
                    "alert": {
                        "p": "event",
                        "unique_id": uid("wearable", wearable.id, "alert"),
                        "name": "Alert",
                        "state_topic": topics.build_ha(gateway, "ha_wearable_event", wearable=wearable.id),
                        "event_types": list(WEARABLE_EVENTS),
                    },
                    "heart_rate": {
                        "p": "sensor",
                        "unique_id": uid("wearable", wearable.id, "heart_rate"),
                        "name": "Heart rate",
                        "state_topic": state,
                        "value_template": "{{ value_json.heart_rate | default(None) }}",
                        "unit_of_measurement": "bpm",
                        "state_class": "measurement",
                        "icon": "mdi:heart-pulse",
                    },
                    "battery": {
                        "p": "sensor",
                        "unique_id": uid("wearable", wearable.id, "battery"),
                        "name": "Battery",
                        "state_topic": state,
                        "value_template": "{{ value_json.battery | default(None) }}",
                        "device_class": "battery",
                        "unit_of_measurement": "%",
                        "state_class": "measurement",
                        "entity_category": "diagnostic",
                    },
                },
                **available,
                "qos": 1,
            },
        )
    for camera in gw.cameras:
        add(
            (gateway, "camera", camera.id),
            {
                "dev": device("camera", camera.id, f"Camera {camera.id}", "camera", camera.zone),
                "o": origin,
                "cmps": {
                    "motion": {
                        "p": "binary_sensor",
                        "unique_id": uid("camera", camera.id, "motion"),
                        "name": "Motion",
                        "device_class": "motion",
                        "state_topic": topics.build_ha(gateway, "ha_camera_motion", camera=camera.id),
                        "off_delay": MOTION_OFF_DELAY_S,
                    }
                },
                **available,
                "qos": 1,
            },
        )
    return out
