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
    # Inbound messages waiting to be handled. QoS 1 floods are paced by the broker (unacked
    # messages in flight are capped); QoS 0 beyond this cap is dropped (and logged).
    max_queued_incoming: int = 10_000
    # MQTT 5: QoS 1 messages in flight to the link at once (below max_queued_incoming, so a
    # QoS 1 flood waits at the broker instead of overflowing the queue). 3.1.1 has no such
    # setting: the broker's own (Mosquitto max_inflight_messages, 20) applies.
    receive_maximum: int = 1000


def backoff_delay(attempt: int, minimum: float, maximum: float, rand: float) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(max, minimum * 2**attempt)]."""
    ceiling = min(maximum, minimum * (2.0 ** min(attempt, 30)))
    return max(minimum / 10.0, ceiling * rand)
