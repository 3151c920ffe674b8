"""The gateway file's schema: one frozen struct per section of a gateway's TOML file.

Owns: identity, brokers, devices (lamps, cameras, wearables), responders, serial buses and the
dongle, trust, limits, HTTP, Home Assistant, shadow mode and ``GatewayFile``, the whole file.
Field constraints are checked by msgspec as the file is converted; the checks that span
sections are the loader's (``edge_agent.config``).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from edge_agent.config.foreign import ForeignTopic
from edge_agent.policy.model import Name

__all__ = [
    "BrokerSettings",
    "Bus",
    "Camera",
    "Dongle",
    "GatewayFile",
    "HomeAssistant",
    "Http",
    "Identity",
    "Lamp",
    "Limits",
    "Modem",
    "Point",
    "Responder",
    "Shadow",
    "Tls",
    "Trust",
    "Wearable",
]


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
    # E.164 ("+8613800138000"): where the modem sends this responder's SMS, and the only number
    # whose replies acknowledge for them
    phone: str | None = None
    # a file holding this responder's Apprise URL (ntfy://, gotify://, tgram://, json://...): the
    # push channel's target; the URL carries a token, so it lives in a file and is never logged
    push_url_file: str | None = None


class Modem(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The cellular modem, driven by Gammu's SMS daemon (gammu-smsd, files backend) beside
    the agent on the gateway host (docs/DEPLOY.md). The agent hands each SMS to
    ``gammu-smsd-inject`` and reads the replies from the daemon's inbox folder; both paths come
    from the daemon's own config file ``smsdrc`` (relative to this file)."""

    smsdrc: str
    inject: str = "gammu-smsd-inject"  # the command that puts an SMS in the daemon's outbox
    poll: Annotated[float, msgspec.Meta(gt=0, le=60)] = 0.5  # seconds between looks at the inbox
    # the modem's AT command port for rings (a call that rings and hangs up): USB modems expose
    # one beside the port gammu-smsd holds (Quectel EC20: /dev/ttyUSB2); None: no ring channel
    ring_port: str | None = None
    ring_baudrate: int = 115200
    ring_seconds: Annotated[float, msgspec.Meta(gt=0, le=120)] = 30.0  # how long a ring lasts
    # pacing (the SIM's plan and the carrier's spam filter): SMS to one number at most once per
    # ``every`` (what waits is sent as one SMS listing every alert), at most ``per_minute`` from
    # the SIM, at most ``daily_cap`` a day (then an alarm; notifications still go by the rest)
    every: str | int = "30s"
    per_minute: Annotated[int, msgspec.Meta(ge=1, le=600)] = 10
    daily_cap: Annotated[int, msgspec.Meta(ge=1)] = 300


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
    # inbound messages waiting per link beyond the QoS 1 ones in flight (MQTT 5 Receive
    # Maximum 65,535, held by the link, not by the broker); QoS 0 beyond it is refused
    # (logged and counted)
    max_queued_messages: Annotated[int, msgspec.Meta(ge=10, le=1_000_000)] = 10_000


class Http(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The gateway's own HTTP face (edge_agent/http): ``/metrics`` and the status page.

    ``listen`` is ``host:port`` (port 0: any free port, tests). On a non-loopback address a
    token is required (``token``, or ``token_file`` relative to the gateway file, first line):
    requests carry it as ``Authorization: Bearer <token>`` or ``?token=``; but ``/answer/<token>``,
    a responder's acknowledge link from a push, which carries its own key.
    """

    enabled: bool = True
    listen: str = "127.0.0.1:9180"
    token: str | None = None
    token_file: str | None = None
    # where a responder's phone reaches this face ("http://192.168.1.10:9180"): the base of the
    # acknowledge link in a push (``/answer/<token>``, which needs no token: the link is its own
    # key). None: ``http://<listen>``, which a wildcard address (0.0.0.0, ::) cannot be
    public_url: str | None = None


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
    modem: Modem | None = None
