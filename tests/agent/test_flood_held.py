"""A QoS 1 flood on a broker with Mosquitto's default queue limit loses nothing the broker
acknowledged to the device.

Mosquitto PUBACKs a device's QoS 1 message, then queues it for each subscriber; what does
not fit the subscriber's queue (``max_queued_messages``, 1,000 by default) beyond the
messages in flight to it (up to the subscriber's MQTT 5 Receive Maximum) is dropped. The
agent acknowledges only after its commit, so a flood faster than it commits piles up there.
Here a real Mosquitto with that default, the real agent, and one wearable that publishes a
20,000-event QoS 1 burst as fast as paho sends it (1,000 in flight): every event the broker
PUBACKed is in the agent's store exactly once, and the broker's own dropped counter stays 0.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from devtools.mosquitto import MosquittoProcess
from edge_agent.agent import topics
from edge_agent.clock import ManualClock
from edge_agent.store.db import Store
from tests.agent.harness import SOS_RULE, T0, eventually, running, write_gateway

N = 20_000
DROPPED = "$SYS/broker/publish/messages/dropped"


def _flood(port: int, topic: str, n: int) -> set[int]:
    """Publish seq 1..n with QoS 1 as fast as paho sends them; the seqs the broker PUBACKed."""
    device = paho.Client(CallbackAPIVersion.VERSION2, client_id="W1-device", protocol=paho.MQTTv311)
    device.max_inflight_messages_set(1000)
    device.max_queued_messages_set(0)
    device.connect("127.0.0.1", port)
    device.loop_start()
    try:
        sent = []
        for seq in range(1, n + 1):
            info = device.publish(topic, b'{"v": 1, "event": "geofence_exit", "seq": %d}' % seq, qos=1)
            assert info.rc == paho.MQTT_ERR_SUCCESS
            sent.append((seq, info))
        deadline = time.monotonic() + 60
        while not all(info.is_published() for _, info in sent) and time.monotonic() < deadline:
            time.sleep(0.1)
        # is_published: the broker's PUBACK came (MQTT 3.1.1: no reason code, it took it)
        return {seq for seq, info in sent if info.is_published()}
    finally:
        device.disconnect()
        device.loop_stop()


def _broker_dropped(port: int) -> int:
    """The broker's own count of messages it dropped (retained, every sys_interval)."""
    seen: list[bytes] = []
    reader = paho.Client(CallbackAPIVersion.VERSION2, client_id="dropped-reader")
    reader.on_message = lambda client, userdata, message: seen.append(message.payload)
    reader.on_connect = lambda client, userdata, flags, code, properties: client.subscribe(DROPPED)
    reader.connect("127.0.0.1", port)
    reader.loop_start()
    try:
        deadline = time.monotonic() + 5
        while not seen and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        reader.disconnect()
        reader.loop_stop()
    assert seen, f"no {DROPPED} from the broker"
    return int(seen[-1])


async def test_a_qos1_flood_on_default_queue_limits_loses_nothing_acknowledged(tmp_path: Path, unique_id: str) -> None:
    topic = topics.build(unique_id, "wearable_event", wearable="W1")
    with MosquittoProcess(extra_config="max_queued_messages 1000\nsys_interval 1\n") as broker:
        config = write_gateway(tmp_path, unique_id, broker.port, SOS_RULE)
        async with running(config, ManualClock(T0)) as agent:
            acked = await asyncio.to_thread(_flood, broker.port, topic, N)
            assert len(acked) == N  # the broker took every one: each is the agent's to keep

            last, still = -1, time.monotonic()
            while (count := len(_seqs(agent.store))) < N and time.monotonic() - still < 5:
                if count != last:  # wait while the agent makes progress
                    last, still = count, time.monotonic()
                await asyncio.sleep(0.05)
            kept = _seqs(agent.store)
            lost = acked - kept
            assert not lost, f"{len(lost)} of {N} acknowledged events lost (first: {sorted(lost)[:5]})"
            assert kept == acked
            (logged,) = agent.store.db.execute("SELECT count(*) FROM event_log WHERE device = 'W1'").fetchone()
            assert logged == N  # each handled once: one incident row per event
            await asyncio.sleep(1.5)  # one more sys_interval: the counter covers the whole flood
            assert await asyncio.to_thread(_broker_dropped, broker.port) == 0
            await eventually(lambda: agent.stats.broker_dropped == 0, 1, "no drop counted")
            assert not agent.stats.seq_gaps


def _seqs(store: Store) -> set[int]:
    return {int(row[0]) for row in store.db.execute("SELECT seq FROM inbox WHERE device = 'W1'")}
