"""One MQTT connection's aiomqtt client, with what the link needs that aiomqtt does not give.

Owns: building the client for one connection attempt from ``LinkSettings`` (MQTT 5 session
properties, manual acknowledgement, Nagle off: ``NO_DELAY``), failing a connect closed before
its CONNACK and the publishes whose PUBACK can no longer come at once, publishing through paho
so that each PUBACK's reason code reaches its publish (``send_many``), the MQTT 5 reason code
names (``reason_name``), the client log (``QUIET_LOG``) whose inbound-queue overflows are
counted (paho's DEBUG records off), paho's MQTT 5 property tables built once
(``share_paho_property_tables``) and inbound messages queued as four fields
(``pass_messages_through``, ``Inbound``). paho's reads and writes made cheaper: ``mqtt_io``.
The link that reconnects and serves: edge_agent/transports/mqtt.py.
Must not import: the engine, the policy, the store or the agent.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.transports.link import Outgoing
from edge_agent.transports.mqtt_io import tune_paho_io
from edge_agent.transports.mqtt_settings import LinkSettings


class _ClientLogFilter(logging.Filter):
    """Keeps aiomqtt's log useful: drops its 'pending publish calls' notice (the outbox
    pipelines on purpose) and counts the messages it discards because the inbound queue is
    full, so an overload is a visible refusal (``discarded_inbound``), not a silent loss."""

    discarded_inbound = 0

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "pending publish calls" in message:
            return False
        if "Discarding message" in message:
            type(self).discarded_inbound += 1
        return True


def share_paho_property_tables() -> None:
    """paho (2.x) builds two constant lookup tables (28 names, 27 property kinds) in *every*
    ``Properties`` object, makes one for every MQTT 5 packet it reads, and empties it by
    trying 28 names: about a quarter of the agent's CPU in a QoS 1 flood. Built once and
    shared as class attributes, with ``clear`` deleting only what is set, the objects behave
    the same (tests/test_mqtt_link.py packs and unpacks them against the spec's bytes)."""
    if getattr(Properties, "_edge_agent_shared", False):
        return
    template = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    for table in ("types", "names", "properties"):
        setattr(Properties, table, getattr(template, table))
    private = frozenset({"packetType", "types", "names", "properties"})

    def init(self: Properties, packet_type: int) -> None:
        object.__setattr__(self, "packetType", packet_type)

    def clear(self: Properties) -> None:
        for name in [n for n in vars(self) if n not in private]:
            delattr(self, name)

    Properties.__init__ = init  # type: ignore[method-assign]
    Properties.clear = clear  # type: ignore[method-assign]
    Properties._edge_agent_shared = True  # type: ignore[attr-defined]


share_paho_property_tables()

QUIET_LOG = logging.getLogger("edge_agent.mqtt.client")
CLIENT_LOG_FILTER = _ClientLogFilter()
QUIET_LOG.addFilter(CLIENT_LOG_FILTER)
# paho logs every packet it reads or sends at DEBUG: under `edge-agent -v` that formatted a
# record per message of a flood. Its notices, warnings and errors still come through.
QUIET_LOG.setLevel(logging.INFO)


class Inbound(NamedTuple):
    """One inbound message as the link reads it from a connection's queue."""

    topic: str
    payload: bytes
    qos: int
    mid: int  # what its acknowledgement names


def pass_messages_through(client: aiomqtt.Client) -> None:
    """Queue each inbound message as an ``Inbound`` (four fields), not as aiomqtt's
    ``Message`` (a copy with a validated Topic: an eighth of the agent's CPU in a QoS 1
    flood); paho's own message (1.6 KB with the lock of its outbound MQTTMessageInfo) is
    not kept either. A full queue discards and logs like aiomqtt (``discarded_inbound``)."""
    queue = cast("asyncio.Queue[Inbound]", client._queue)

    def on_message(paho_client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        try:
            queue.put_nowait(Inbound(message.topic, bytes(message.payload), message.qos, message.mid))
        except asyncio.QueueFull:
            QUIET_LOG.warning("Message queue is full. Discarding message.")

    client._client.on_message = on_message


# paho leaves Nagle's algorithm on: a small PUBLISH or PUBACK then waits for the previous
# segment's TCP ack (up to 40 ms of delayed ACK). Alerts and lamp commands must not.
NO_DELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)

# MQTT 5 failure reason codes (>= 0x80) of PUBACK and SUBACK, as short countable names.
REASON_NAMES: dict[int, str] = {
    0x80: "unspecified_error",
    0x83: "implementation_specific_error",
    0x87: "not_authorized",
    0x8F: "topic_filter_invalid",
    0x90: "topic_name_invalid",
    0x91: "packet_id_in_use",
    0x97: "quota_exceeded",
    0x99: "payload_format_invalid",
    0x9E: "shared_subscriptions_not_supported",
    0xA1: "subscription_ids_not_supported",
    0xA2: "wildcard_subscriptions_not_supported",
}


def reason_name(code: int) -> str:
    """``not_authorized`` for 0x87; ``reason_0xNN`` for a code MQTT 5 does not define here."""
    return REASON_NAMES.get(code, f"reason_0x{code:02x}")


def reason_code_value(value: ReasonCode | int) -> int:
    return value.value if isinstance(value, ReasonCode) else int(value)


@dataclass(eq=False)
class Connection:
    """One broker connection: its aiomqtt client and the PUBACKs its publishes wait for.

    aiomqtt resolves a publish on PUBACK but drops the PUBACK's reason code (its paho
    ``on_publish`` callback ignores it), so the link sends through paho itself and waits here,
    per message id, for the reason code its own ``on_publish`` wrapper hands over.
    """

    client: aiomqtt.Client
    pubacks: dict[int, asyncio.Future[int]] = field(default_factory=dict)


def make_connection(s: LinkSettings) -> Connection:
    """A new aiomqtt client for one connection attempt, with the fixes below installed."""
    will = aiomqtt.Will(s.will[0], s.will[1], qos=1, retain=True) if s.will else None
    session: dict[str, Any]
    if s.protocol == "5":
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        if not s.clean_session:
            properties.SessionExpiryInterval = s.session_expiry
        # QoS 1 messages the broker may have in flight to us, unacknowledged (the link's
        # inbound queue has room for all of them): it queues the rest, and drops what
        # overflows its per-client queue (max_queued_messages)
        properties.ReceiveMaximum = s.receive_maximum
        # clean_start False on EVERY connect (aiomqtt's default starts clean on the first
        # connect of a client object, and the link makes a new one per connection)
        session = {
            "protocol": aiomqtt.ProtocolVersion.V5,
            "clean_start": s.clean_session,
            "properties": properties,
        }
    else:
        session = {"protocol": aiomqtt.ProtocolVersion.V311, "clean_session": s.clean_session}
    client = aiomqtt.Client(
        s.host,
        s.port,
        identifier=s.client_id,
        username=s.username,
        password=s.password,
        tls_context=s.tls,
        keepalive=s.keepalive,
        will=will,
        timeout=s.publish_timeout,
        max_inflight_messages=100,
        max_queued_incoming_messages=s.max_queued_incoming,
        socket_options=NO_DELAY,
        logger=QUIET_LOG,
        **session,
    )
    conn = Connection(client)
    tune_paho_io(client._client)
    pass_messages_through(client)
    if s.manual_ack:
        # aiomqtt does not expose paho's manual acknowledgement; its paho client does.
        client._client.manual_ack_set(True)
    # aiomqtt ignores a connection closed before the CONNACK and waits for its timeout
    # (publish_timeout, 10 s) instead: every such attempt (an uplink that accepts and
    # drops, a broker starting up) delayed the outbox by that much. Fail it at once.
    forward_disconnect = client._client.on_disconnect
    pubacks = conn.pubacks

    def on_disconnect(*args: Any, **kwargs: Any) -> None:
        connected = client._connected
        if not connected.done():
            connected.set_exception(aiomqtt.MqttError("connection closed before CONNACK"))
        # PUBACKs can no longer come: fail their publishes now, not at publish_timeout
        for waiter in pubacks.values():
            if not waiter.done():
                waiter.set_exception(aiomqtt.MqttError("connection lost before the PUBACK"))
        pubacks.clear()
        if forward_disconnect is not None:
            forward_disconnect(*args, **kwargs)

    client._client.on_disconnect = on_disconnect
    # aiomqtt's on_publish drops the PUBACK's reason code: hand it to the waiting publish
    # first (by message id), then let aiomqtt do its part (nothing of ours waits there).
    # paho calls this from loop_read/loop_write, which aiomqtt runs as event loop
    # callbacks: never while ``_send`` is between paho's publish() and registering its
    # waiter (no await there), so the waiter is always in place before its PUBACK is read.
    forward_publish = client._on_publish  # what aiomqtt installed as paho's on_publish

    def on_publish(
        paho_client: paho.Client, userdata: Any, mid: int, reason_code: ReasonCode, properties: Properties
    ) -> None:
        waiter = pubacks.pop(mid, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(reason_code_value(reason_code))
        forward_publish(paho_client, userdata, mid, reason_code, properties)

    client._client.on_publish = on_publish
    return conn


async def send_many(conn: Connection, messages: Sequence[Outgoing], timeout: float) -> list[int | Exception]:
    """Publish many messages at once: all handed to paho in order, then one wait for
    their PUBACKs (no task per message). Each entry: its reason code, or why it failed."""
    loop = asyncio.get_running_loop()
    entries: list[int | Exception | tuple[int, asyncio.Future[int]]] = []
    for topic, payload, qos, retain in messages:
        info = conn.client._client.publish(topic, payload, qos, retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            entries.append(aiomqtt.MqttCodeError(info.rc, "Could not publish message"))
        elif info.is_published():  # sent already, so no waiter could see the reason code
            entries.append(0 if qos == 0 else aiomqtt.MqttError("PUBACK handled before its waiter"))
        else:
            waiter: asyncio.Future[int] = loop.create_future()
            conn.pubacks[info.mid] = waiter
            entries.append((info.mid, waiter))
    waiters = [entry[1] for entry in entries if isinstance(entry, tuple)]
    try:
        if waiters:
            await asyncio.wait(waiters, timeout=timeout)
    finally:
        for entry in entries:
            if isinstance(entry, tuple) and conn.pubacks.get(entry[0]) is entry[1]:
                del conn.pubacks[entry[0]]
    results: list[int | Exception] = []
    for entry in entries:
        if not isinstance(entry, tuple):
            results.append(entry)
        elif entry[1].cancelled():
            results.append(aiomqtt.MqttError("link lost before the PUBACK"))
        elif entry[1].done():  # a PUBACK's reason code, or why none can come (the link lost)
            failure = entry[1].exception()
            results.append(entry[1].result() if failure is None else aiomqtt.MqttError(str(failure)))
        else:
            results.append(aiomqtt.MqttError(f"no PUBACK within {timeout}s"))
    return results
