"""What configures one MQTT link, and how long it waits before connecting again.

Owns: ``LinkSettings`` (broker address, credentials and TLS context, keepalive, will and birth,
protocol version, persistent session, inbound limits, what happens to a message the agent could
not handle) and ``backoff_delay`` (jittered exponential reconnect delays). The link that uses
them: edge_agent/transports/mqtt.py. Must not import: anything of ours.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Literal

MqttVersion = Literal["5", "3.1.1"]
Unhandled = Literal["redeliver", "retry"]

RECEIVE_MAXIMUM = 65_535  # MQTT 5's largest Receive Maximum (a two-byte integer)


@dataclass(frozen=True)
class LinkSettings:
    host: str
    port: int
    client_id: str
    username: str | None = None
    password: str | None = None
    tls: ssl.SSLContext | None = None
    keepalive: int = 30
    reconnect_min: float = 0.5
    reconnect_max: float = 4.0
    will: tuple[str, bytes] | None = None  # last will (retained), e.g. status "offline"
    birth: tuple[str, bytes] | None = None  # sent (retained) after every connect
    # "5": refused publishes are told apart (PublishRefused). "3.1.1": a broker may PUBACK a
    # publish it dropped (Mosquitto does for an ACL denial); only for 3.1.1-only brokers.
    protocol: MqttVersion = "5"
    # False: a persistent session (MQTT 5 clean_start=False, 3.1.1 clean_session=False): the
    # broker keeps the subscriptions and the unacknowledged QoS 1 messages across reconnects
    # and agent restarts, and delivers them again when the link comes back.
    clean_session: bool = False
    # MQTT 5 only: how long the broker keeps that session after the link is gone (seconds;
    # 0xFFFFFFFF never expires). Under 3.1.1 the broker's own setting decides.
    session_expiry: int = 7 * 24 * 3600
    publish_timeout: float = 10.0
    # Acknowledge an inbound QoS 1 message only after on_message returned (i.e. after the
    # agent committed what it did with it). If the agent dies first, the broker redelivers.
    manual_ack: bool = True
    # What to do with an inbound QoS 1 message the handler could not handle (returned False).
    # "redeliver": stop, disconnect without acknowledging it, resume the session: the broker
    # delivers it and everything after it again, in order (Mosquitto, EMQX do: MQTT requires
    # it of a resumed session). "retry": hold it and call the handler again, reading nothing
    # else meanwhile: for a broker that drops an unacknowledged message (amqtt does, after 5 s).
    unhandled: Unhandled = "redeliver"
    # Inbound messages waiting to be handled (read from the socket, not yet acknowledged).
    # Must exceed receive_maximum: a QoS 1 message the queue has no room for is never
    # acknowledged (the broker has it again only after a reconnect); QoS 0 beyond the room
    # left is dropped (and logged, counted).
    max_queued_incoming: int = RECEIVE_MAXIMUM + 10_000
    # MQTT 5: QoS 1 messages the broker may have in flight to the link, unacknowledged. The
    # most MQTT 5 allows: Mosquitto holds in flight up to the client's Receive Maximum and
    # counts only the rest against its per-client queue (max_queued_messages, 1,000 by
    # default, beyond which it drops what it already PUBACKed to the device). Held in flight,
    # a burst waits here, in the link's queue, and is acknowledged once committed. 3.1.1 has
    # no such setting: the broker's own (Mosquitto max_inflight_messages, 20) applies.
    receive_maximum: int = RECEIVE_MAXIMUM


def backoff_delay(attempt: int, minimum: float, maximum: float, rand: float) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(max, minimum * 2**attempt)]."""
    ceiling = min(maximum, minimum * (2.0 ** min(attempt, 30)))
    return max(minimum / 10.0, ceiling * rand)
