"""What the HTTP face may know of the gateway: a read model the agent implements.

Owns: ``GatewayView``, the one interface the status page and ``/metrics`` read through, and the
plain values it returns (frozen msgspec Structs; copies, never the agent's live objects):
identity and clock, links (MQTT, buses, dongle), outbox, alerts, lamps, devices, rule traces,
counters. The view offers no action (the one action, a responder's acknowledgement from a push,
is ``actions.GatewayActions``). The agent's side lives in
``edge_agent/agent/view.py``; this package imports nothing from ``edge_agent.agent``.
"""

from __future__ import annotations

from typing import Protocol

import msgspec


class Histogram(msgspec.Struct, frozen=True):
    """A latency histogram as scraped: (upper bound, cumulative count) with ``+Inf`` last."""

    buckets: tuple[tuple[str, float], ...]
    total: float  # the sum of the observations, seconds


class Identity(msgspec.Struct, frozen=True):
    gateway: str
    timezone: str  # IANA name, for the page's clock
    policy_version: int


class MqttLinkState(msgspec.Struct, frozen=True):
    name: str  # "south" or "north"
    connected: bool
    address: str  # "host:port"
    connects: int
    failures: int  # failed connects
    last_error: str
    refused: dict[str, int]  # what the broker refused at the link, by reason
    unhandled: int  # inbound QoS 1 messages the agent could not handle


class BusState(msgspec.Struct, frozen=True):
    name: str
    port: str
    units: int  # lamp nodes configured
    online: int  # of them, answering
    poll_seconds: Histogram
    requests: int
    failures: int
    retries: int
    protocol_errors: dict[str, int]  # by reason


class DongleState(msgspec.Struct, frozen=True):
    port: str
    connected: bool
    reopens: int
    events: dict[str, int]  # the link's counters (frames, delivered, duplicates, ...) but ``rejected``
    rejected: dict[str, int]  # frames rejected, by reason


class Links(msgspec.Struct, frozen=True):
    mqtt: tuple[MqttLinkState, ...]  # south first, then north when there is an uplink
    buses: tuple[BusState, ...]  # sorted by name
    dongle: DongleState | None


class OutboxDepth(msgspec.Struct, frozen=True):
    link: str
    messages: int
    payload_bytes: int
    oldest_created: float | None  # the clock time the oldest waiting message was queued


class Outbox(msgspec.Struct, frozen=True):
    links: tuple[OutboxDepth, ...]  # links with waiting messages, sorted by name
    parked: dict[str, int]  # messages a broker refused, kept and retried later, by reason


class Reached(msgspec.Struct, frozen=True):
    """One channel of one notification of an alert, as far as it got (the notification ledger)."""

    n: int  # which notification of the alert (1 the first; +1 per escalation)
    responder: str
    channel: str  # app, sms, ring, push
    state: str  # waiting, queued, handed, delivered, failed, cancelled
    reason: str  # why it failed or was cancelled; "" otherwise
    at: float  # when it reached that state (or is due, while waiting)


class Alert(msgspec.Struct, frozen=True):
    alert_id: str
    created: float
    device: str
    rule: str
    priority: int
    message: str
    step: int
    responder: str | None
    status: str
    open: bool  # still waiting for a responder (raised, notified, escalated, unacknowledged)
    replies: tuple[str, str] = ("", "")  # the SMS a responder sends to take it and to resolve it ("1 K7QD", "2 K7QD")
    reached: tuple[Reached, ...] = ()  # who was reached how, and when (open alerts only)


class Lamp(msgspec.Struct, frozen=True):
    id: str
    group: str
    level: float | None  # the level last decided; None: never decided
    overridden: bool  # an override or a boost holds it now


class Device(msgspec.Struct, frozen=True):
    id: str
    kind: str  # "lamp", "camera", "wearable"
    group: str | None
    zone: str | None
    last_seen: float | None  # when it last reported (clock time); None: never
    last_event: str | None  # what it last reported ("reporting" for plain telemetry)


class Trace(msgspec.Struct, frozen=True):
    ts: float
    rule: str
    trigger: str  # the trigger's type
    actions: tuple[str, ...]
    duration_us: int


class Counters(msgspec.Struct, frozen=True):
    received_by_class: dict[str, int]  # inbound, by topic class
    sent_by_class: dict[tuple[str, str], int]  # (link, topic class) acknowledged by the broker
    rejected: dict[str, int]  # inbound rejected, by reason
    duplicates: int
    effects: int
    alarms: dict[str, int]  # local alarms, by reason
    refused: dict[str, int]  # "<link>.<reason>": outbox publishes a broker refused
    alerts_raised: int
    alert_changes: dict[str, int]  # by the alert's new status
    notifications: int  # responder notifications
    rule_seconds: Histogram  # rule runs, condition and actions
    fsyncs: int  # the store's WAL fsyncs
    notifications_by_state: dict[tuple[str, str], int] = {}  # (channel, state) -> notification ledger rows
    notify_failed: dict[str, int] = {}  # by link: messages a channel could not take or send
    sms_replies: dict[str, int] = {}  # replies that acknowledged or resolved, by action
    seq_gaps: dict[str, int] = {}  # by device kind: device events missing by their seq numbers
    broker_dropped: int = 0  # messages the south broker says it dropped (its $SYS counter's increases)


class GatewayView(Protocol):
    """The running gateway as its HTTP face reads it; every call returns a fresh copy and is
    made on the agent's own event loop."""

    def identity(self) -> Identity: ...

    def now(self) -> float:
        """The gateway's clock."""
        ...

    def links(self) -> Links: ...

    def outbox(self) -> Outbox: ...

    def alert_counts(self) -> dict[str, int]:
        """Alerts in the store, by status."""
        ...

    def recent_alerts(self, limit: int) -> tuple[Alert, ...]:
        """Open alerts first (newest first), then the most recently closed ones."""
        ...

    def lamps(self) -> tuple[Lamp, ...]: ...

    def devices(self) -> tuple[Device, ...]:
        """Every configured device, sorted by id."""
        ...

    def traces(self, limit: int) -> tuple[Trace, ...]:
        """The last rule runs, newest first."""
        ...

    def counters(self) -> Counters: ...
