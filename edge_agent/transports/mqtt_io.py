"""paho's socket reads and writes, made cheaper for a flood (paho 2.x, which aiomqtt 2 requires).

Owns: ``tune_paho_io`` (what ``mqtt_client.make_connection`` installs on each connection's paho
client): reading many packets per socket wake from a buffer filled by one ``recv()``
(``read_many_per_wake``: paho asks the socket for 1 byte, then 1, then the rest of every
packet), writing what is queued in one ``send()`` (``write_coalesced``), and a batch's
PUBACKs queued as one write (``acknowledge``), and no walk of every message in flight on
each PUBACK when none is queued (``scan_queue_only_when_queued``). Each goes through paho's private parts and is
guarded: when the installed paho lacks them, its own code stays in place. What they keep:
tests/test_mqtt_reads.py (a real Mosquitto). No MQTT parsing here: paho still parses every byte.
Must not import: anything of ours.
"""

from __future__ import annotations

import collections
import struct
from collections.abc import Sequence
from typing import Any, Protocol

import paho.mqtt.client as paho
from paho.mqtt.client import PUBACK, PUBLISH
from paho.mqtt.enums import MQTTErrorCode

# paho's loop_read reads one packet per call (at most one per pending outbound or QoS 2
# message: one, in a QoS 1 flood to us), and aiomqtt calls it once per readable socket: a
# flood cost an event-loop wake per message. The link reads up to this many per wake.
READS_PER_WAKE = 1024
# one recv() takes up to this much of what the socket holds (hundreds of small packets)
READ_CHUNK = 65536


def read_many_per_wake(client: paho.Client, packets: int | None = None, chunk: int = READ_CHUNK) -> bool:
    """Make ``client.loop_read()`` read up to ``packets`` packets, until the socket has no
    more: paho's own loop with a larger bound, through its private ``_packet_read`` and
    ``_loop_rc_handle``; and paho's ``_sock_recv`` hand out what one ``recv(chunk)`` read
    instead of asking the socket for each piece (1 byte, 1 byte, the rest: three system calls
    per packet). The loop stops only with the buffer empty (past ``packets``, it reads no more
    from the socket, which a level-triggered wake reports again): no byte waits in the buffer
    for a wake that would not come. False, leaving paho's loop_read in place, if the installed
    paho has not all three (tests/test_mqtt_reads.py checks the installed one has)."""
    packets = READS_PER_WAKE if packets is None else packets
    packet_read = getattr(client, "_packet_read", None)
    rc_handle = getattr(client, "_loop_rc_handle", None)
    recv = getattr(client, "_sock_recv", None)
    if not callable(packet_read) or not callable(rc_handle) or not callable(recv):
        return False
    again, success, no_conn = paho.MQTT_ERR_AGAIN, paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN
    buffer = b""
    position = 0
    refill = True  # False: past ``packets`` this wake, hand out only what is buffered

    def sock_recv(bufsize: int) -> bytes:
        nonlocal buffer, position
        if position >= len(buffer):
            if not refill:
                raise BlockingIOError
            data: bytes = recv(max(bufsize, chunk))  # BlockingIOError, OSError, b"" (closed): paho's
            if len(data) <= bufsize:
                return data
            buffer, position = data, 0
        piece = buffer[position : position + bufsize]
        position += len(piece)
        return piece

    def loop_read(max_packets: int = 1) -> MQTTErrorCode:
        nonlocal refill
        refill = True
        read = 0
        while True:
            if client.socket() is None:
                return no_conn
            rc = packet_read()
            if rc > 0:
                handled: MQTTErrorCode = rc_handle(rc)
                return handled
            if rc == again:
                return success
            read += 1
            if read >= packets:
                if position >= len(buffer):
                    return success
                refill = False

    client._sock_recv = sock_recv  # type: ignore[method-assign]
    client.loop_read = loop_read  # type: ignore[method-assign]
    return True


def write_coalesced(client: paho.Client) -> bool:
    """Make ``client.loop_write()`` send what is queued in one ``send()``, not one per packet
    (a batch's 256 PUBACKs were 256 system calls, 11% of the agent's CPU in a QoS 1 flood):
    before paho's own loop_write runs, each run of queued packets whose completion paho does
    nothing with (PUBACKs, QoS 1 PUBLISHes, pings: all but QoS 0 PUBLISH and DISCONNECT, which
    keep their own entries) becomes one entry, through paho's private ``_out_packet`` (paho
    2.x). False, leaving loop_write alone, if the installed paho has no such queue
    (tests/test_mqtt_reads.py checks the installed one has, and that the bytes arrive)."""
    queue = getattr(client, "_out_packet", None)
    if not isinstance(queue, collections.deque) or not callable(getattr(client, "_packet_write", None)):
        return False
    write = client.loop_write

    def plain(packet: Any) -> bool:
        command = packet["command"] & 0xF0
        return bool(command != paho.DISCONNECT and (command != PUBLISH or packet["qos"] > 0))

    def loop_write() -> MQTTErrorCode:
        if len(queue) > 1:
            merged: collections.deque[Any] = collections.deque()
            run: list[Any] = []
            for packet in queue:
                if plain(packet):
                    run.append(packet)
                    continue
                merged.extend(_merge(run))
                run = []
                merged.append(packet)
            merged.extend(_merge(run))
            queue.clear()
            queue.extend(merged)
        return write()

    client.loop_write = loop_write  # type: ignore[method-assign]
    return True


def _merge(run: list[Any]) -> list[Any]:
    """One queue entry for ``run`` (packets whose completion needs nothing), from the first
    one's unsent part on."""
    if len(run) < 2:
        return run
    first = run[0]
    data = b"".join([first["packet"][first["pos"] :], *(packet["packet"] for packet in run[1:])])
    return [{"command": PUBACK, "mid": 0, "qos": 1, "pos": 0, "to_process": len(data), "packet": data, "info": None}]


_PUBACK = struct.Struct("!BBH")


def acknowledge(client: paho.Client, messages: Sequence[Received]) -> None:
    """Acknowledge ``messages`` (manual acknowledgement, in order) as paho's ``ack`` would, but
    the QoS 1 ones as one queued write of their PUBACKs (paho's private ``_packet_queue``),
    not a queued packet, two calls and a log call each; one by one through ``ack`` if there
    is a QoS 2 message among them or the installed paho has no ``_packet_queue``."""
    queue_packet = getattr(client, "_packet_queue", None)
    if len(messages) < 2 or not callable(queue_packet) or any(m.qos != 1 for m in messages):
        for message in messages:
            client.ack(message.mid, message.qos)
        return
    pack = _PUBACK.pack
    queue_packet(PUBACK, b"".join([pack(PUBACK, 2, m.mid) for m in messages]), 0, 1)


class Received(Protocol):
    """What acknowledging an inbound message needs of it."""

    @property
    def qos(self) -> int: ...

    @property
    def mid(self) -> int: ...


def scan_queue_only_when_queued(client: paho.Client) -> bool:
    """Make paho's ``_update_inflight`` (run on every PUBACK of a publish of ours) look for
    queued messages only when there are some. paho walks every message it holds, in flight
    or queued, to send queued ones while fewer than ``max_inflight_messages`` are in flight:
    with a window of alerts in flight, each PUBACK walked the whole window (8% of the agent's
    CPU in a QoS 1 flood). paho counts in ``_inflight_messages`` the messages of
    ``_out_messages`` that are in flight; when the two numbers are equal, none is queued and
    the walk would send nothing. False, leaving it alone, if the installed paho lacks these
    parts (tests/test_mqtt_reads.py checks it has them, and that queued messages still go)."""
    update = getattr(client, "_update_inflight", None)
    if not callable(update) or not isinstance(getattr(client, "_out_messages", None), dict):
        return False
    if not isinstance(getattr(client, "_inflight_messages", None), int):
        return False
    success = MQTTErrorCode.MQTT_ERR_SUCCESS

    def update_inflight() -> MQTTErrorCode:
        if len(client._out_messages) <= client._inflight_messages:
            return success
        result: MQTTErrorCode = update()
        return result

    client._update_inflight = update_inflight  # type: ignore[method-assign]
    return True


def tune_paho_io(client: paho.Client) -> None:
    read_many_per_wake(client)
    write_coalesced(client)
    scan_queue_only_when_queued(client)
