"""A flood is read in few socket wakes and acknowledged in few writes; paho's per-packet DEBUG
records stay off.

paho's ``loop_read`` reads one packet per call and aiomqtt calls it once per readable socket:
without ``read_many_per_wake`` a burst of 500 messages costs at least 500 calls (500 wakes of
the event loop). A real Mosquitto and a real connection from ``make_connection``: the burst is
let pile up in the socket (the event loop blocked meanwhile), then counted as it is read.
"""

from __future__ import annotations

import asyncio
import logging
import time

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from devtools.mosquitto import MosquittoProcess
from edge_agent.transports import mqtt_io
from edge_agent.transports.mqtt_client import QUIET_LOG, Inbound, make_connection, send_many
from edge_agent.transports.mqtt_io import acknowledge
from edge_agent.transports.mqtt_settings import LinkSettings
from tests.agent.harness import eventually

BURST = 500
ACKED = 300  # of BURST: the rest stay unacknowledged


@pytest.mark.parametrize("per_wake", [mqtt_io.READS_PER_WAKE, 7])
async def test_a_burst_is_read_in_a_few_wakes_without_debug_records(
    per_wake: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a small bound per wake too: what the read buffer holds past the bound is handed
    out in the same wake (the socket, drained, would not wake the loop for it)."""
    monkeypatch.setattr(mqtt_io, "READS_PER_WAKE", per_wake)
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append  # type: ignore[method-assign]
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.DEBUG)  # as under `edge-agent run -v`
    root.addHandler(handler)
    try:
        with MosquittoProcess() as broker:
            conn = make_connection(LinkSettings("127.0.0.1", broker.port, "reader", clean_session=True))
            reader = conn.client._client
            calls = 0
            read = reader.loop_read

            def counted(max_packets: int = 1) -> paho.MQTTErrorCode:
                nonlocal calls
                calls += 1
                return read(max_packets)

            reader.loop_read = counted  # type: ignore[method-assign]
            async with conn.client as client:
                await client.subscribe("burst/#", qos=0)
                sender = paho.Client(CallbackAPIVersion.VERSION2, client_id="sender")
                sender.connect("127.0.0.1", broker.port)
                sender.loop_start()
                try:
                    infos = [sender.publish("burst/x", b"%d" % i, qos=0) for i in range(BURST)]
                    for info in infos:
                        info.wait_for_publish(5)
                    time.sleep(0.5)  # noqa: ASYNC251 (on purpose: the burst piles up in the socket)
                finally:
                    sender.disconnect()
                    sender.loop_stop()
                before = calls
                await eventually(lambda: client._queue.qsize() >= BURST, 10, "the burst read")
                assert [client._queue.get_nowait().payload for _ in range(BURST)] == [b"%d" % i for i in range(BURST)]
                if per_wake > 100:  # the default bound
                    assert calls - before <= 10, f"{calls - before} loop_read calls for {BURST} messages"
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    debug = [r.getMessage() for r in records if r.name == QUIET_LOG.name and r.levelno < logging.INFO]
    assert not debug, f"paho DEBUG records per packet: {debug[:3]}"


async def test_a_batch_of_pubacks_is_one_write_and_the_broker_takes_each() -> None:
    """``acknowledge`` sends a batch's PUBACKs in a few ``send()`` calls (paho alone: one per
    message), and each reaches the broker as its own: after a reconnect to the same session,
    Mosquitto delivers again exactly the messages that were not acknowledged."""
    with MosquittoProcess() as broker:
        settings = LinkSettings("127.0.0.1", broker.port, "acker", receive_maximum=BURST)
        sender = paho.Client(CallbackAPIVersion.VERSION2, client_id="sender", protocol=paho.MQTTv5)
        sender.connect("127.0.0.1", broker.port)
        sender.loop_start()
        try:
            conn = make_connection(settings)
            reader = conn.client._client
            sends = 0
            send = reader._sock_send

            def counted(buf: bytes) -> int:
                nonlocal sends
                sends += 1
                return send(buf)

            reader._sock_send = counted  # type: ignore[method-assign]
            async with conn.client as client:
                await client.subscribe("burst/#", qos=1)
                for i in range(BURST):
                    sender.publish("burst/x", b"%d" % i, qos=1)
                await eventually(lambda: client._queue.qsize() >= BURST, 10, "the burst")
                messages: list[Inbound] = [client._queue.get_nowait() for _ in range(BURST)]
                assert [m.payload for m in messages] == [b"%d" % i for i in range(BURST)]
                before = sends
                acknowledge(reader, messages[:ACKED])
                await eventually(lambda: not reader.want_write(), 10, "the PUBACKs written")
                assert 1 <= sends - before <= 3, f"{sends - before} send() calls for {ACKED} PUBACKs"
            again = make_connection(settings)  # the same session: what was not acknowledged comes again
            async with again.client as client:
                sender.publish("burst/end", b"end", qos=1)  # queued behind any redelivery
                seen: list[bytes] = []
                while not seen or seen[-1] != b"end":
                    seen.append((await client._queue.get()).payload)
        finally:
            sender.disconnect()
            sender.loop_stop()
    assert seen == [b"%d" % i for i in range(ACKED, BURST)] + [b"end"]


async def test_publishes_past_the_in_flight_cap_still_go_and_idle_pubacks_walk_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``scan_queue_only_when_queued``: with paho's in-flight cap at 3, 40 QoS 1 publishes
    (37 queued at first) are each sent and acknowledged, in order, as each PUBACK frees a slot;
    with nothing queued (3 publishes at a time under that cap), the PUBACKs never walk paho's
    list of messages."""
    walks = 0
    walk = paho.Client._update_inflight

    def counted(self: paho.Client) -> paho.MQTTErrorCode:
        nonlocal walks
        walks += 1
        result: paho.MQTTErrorCode = walk(self)
        return result

    monkeypatch.setattr(paho.Client, "_update_inflight", counted)  # under the link's own guard
    with MosquittoProcess() as broker:
        conn = make_connection(LinkSettings("127.0.0.1", broker.port, "publisher", clean_session=True))
        conn.client._client.max_inflight_messages_set(3)
        watcher = paho.Client(CallbackAPIVersion.VERSION2, client_id="watcher")
        seen: list[bytes] = []
        watcher.on_message = lambda _c, _u, message: seen.append(message.payload)
        watcher.connect("127.0.0.1", broker.port)
        watcher.subscribe("capped/#", qos=1)
        watcher.loop_start()
        try:
            await asyncio.sleep(0.2)
            async with conn.client:
                codes = await send_many(conn, [(f"capped/{i}", b"%d" % i, 1, False) for i in range(40)], 10)
                assert codes == [0] * 40
                assert walks > 0  # the queued ones went out through paho's walk
                walks = 0
                for start in range(40, 49, 3):
                    batch = [(f"capped/{i}", b"%d" % i, 1, False) for i in range(start, start + 3)]
                    assert await send_many(conn, batch, 10) == [0] * 3
                assert walks == 0, f"{walks} walks of paho's message list with nothing queued"
            await eventually(lambda: len(seen) >= 49, 10, "the 49 messages at the watcher")
        finally:
            watcher.disconnect()
            watcher.loop_stop()
    assert seen == [b"%d" % i for i in range(49)]
