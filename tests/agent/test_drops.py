"""What a broker dropped behind the gateway's back is counted and alarmed: the gaps in a
device's ``seq`` (reboot, duplicate and late arrival are not gaps) and Mosquitto's own
``$SYS/broker/publish/messages/dropped``.

The unit tests use a real store and the real alarm (no south link: it logs and counts). The
end-to-end test runs a real Mosquitto with a 10-message queue per client, the agent away
while a wearable sends 50 QoS 1 events: the broker PUBACKs all 50 and keeps 10."""

from __future__ import annotations

from pathlib import Path

import aiomqtt

from devtools.mosquitto import MosquittoProcess
from edge_agent.agent import topics
from edge_agent.agent.alarm import Alarm
from edge_agent.agent.drops import DropWatch
from edge_agent.agent.runtime import AgentStats, Background, Links
from edge_agent.clock import ManualClock
from edge_agent.models import Event
from edge_agent.store.db import Store
from tests.agent.harness import SOS_RULE, T0, eventually, running, write_gateway


def _watch(tmp_path: Path) -> tuple[DropWatch, AgentStats, ManualClock, Store]:
    stats, clock = AgentStats(), ManualClock(T0)
    store = Store(tmp_path / "s.sqlite3")
    alarm = Alarm("gw", clock, Links(), stats, Background())
    return DropWatch(alarm, stats, clock, store), stats, clock, store


def _event(device: str, seq: int) -> Event:
    return Event(device, "wearable", "geofence_exit", T0, None, None, {"seq": seq})


async def test_a_jump_counts_the_missing_a_reboot_or_a_late_one_does_not(tmp_path: Path) -> None:
    watch, stats, clock, _ = _watch(tmp_path)
    seen = [watch.observe(_event("W1", seq)) for seq in (5, 6, 7, 10)]  # 8 and 9 never came
    assert seen == [0, 0, 0, 2]
    assert watch.observe(_event("W1", 9)) == 0  # late: no gap, and no new one at 11
    assert watch.observe(_event("W1", 11)) == 0
    assert watch.observe(_event("W1", 1)) == 0  # the device rebooted
    assert watch.observe(_event("W1", 2)) == 0
    assert watch.observe(_event("W2", 0)) == 0  # another device, numbering from 0
    assert watch.observe(_event("W2", 4)) == 3
    assert stats.seq_gaps == {"wearable": 5}
    assert stats.seq_missed == {"W1": 2, "W2": 3}
    assert stats.alarms["seq_gap"] == 2  # one per device
    assert watch.observe(_event("W1", 5)) == 2  # 3 and 4: within the interval, counted, not alarmed
    assert stats.alarms["seq_gap"] == 2
    await clock.advance(DropWatch.ALARM_EVERY_S)
    assert watch.observe(_event("W1", 7)) == 1
    assert stats.alarms["seq_gap"] == 3
    assert stats.seq_gaps == {"wearable": 8}


def test_events_without_a_seq_are_not_numbered(tmp_path: Path) -> None:
    watch, stats, _, _ = _watch(tmp_path)
    vitals = Event("W1", "wearable", "vitals", T0, None, None, {"heart_rate": 80})
    lamp = Event("L1", "lamp", "state", T0, None, None, {"seq": 9})
    assert watch.observe(vitals) == watch.observe(lamp) == 0
    assert not stats.seq_gaps


def test_the_last_seq_is_rebuilt_from_the_store(tmp_path: Path) -> None:
    _, _, _, store = _watch(tmp_path)
    with store.transaction():
        for seq in (3, 4, 5):
            store.inbox.first_time("W1", seq, T0)
        store.inbox.first_dongle_frame("boot1", 40, T0)
    store.close()
    watch, _, _, _ = _watch(tmp_path)  # a restarted agent on the same store
    assert watch.observe(_event("W1", 9)) == 3  # 6, 7, 8
    assert watch.observe(_event("dongle:boot1", 45)) == 0  # a dongle's link seq is not a device's


def test_the_broker_counter_alarms_each_increase_once_across_restarts(tmp_path: Path) -> None:
    watch, stats, _, store = _watch(tmp_path)
    with store.transaction():
        watch.broker_counter(b"0")
        watch.broker_counter(b"40")
        watch.broker_counter(b"40")
    assert stats.broker_dropped == 40 and stats.alarms["broker_dropped"] == 1
    store.close()
    watch, stats, _, store = _watch(tmp_path)  # the agent restarts: the same 40 are not new
    with store.transaction():
        watch.broker_counter(b"40")
        watch.broker_counter(b"3")  # the broker restarted: its 3 are new
    assert stats.broker_dropped == 3 and stats.alarms["broker_dropped"] == 1


async def _publish_events(port: int, topic: str, seqs: range) -> None:
    async with aiomqtt.Client("127.0.0.1", port, identifier="W1-device") as device:
        for seq in seqs:  # each awaits its PUBACK: the broker took every one
            await device.publish(topic, f'{{"v": 1, "event": "geofence_exit", "seq": {seq}}}'.encode(), qos=1)


async def test_a_full_broker_queue_is_counted_and_alarmed(tmp_path: Path, unique_id: str) -> None:
    topic = topics.build(unique_id, "wearable_event", wearable="W1")
    with MosquittoProcess(extra_config="max_queued_messages 10\nsys_interval 1\n") as broker:
        config = write_gateway(tmp_path, unique_id, broker.port, SOS_RULE)
        async with running(config, ManualClock(T0)):  # the gateway's persistent session exists
            pass
        await _publish_events(broker.port, topic, range(1, 51))  # the agent is away: the broker keeps 10
        async with running(config, ManualClock(T0)) as agent:
            await eventually(lambda: len(_seqs(agent.store)) >= 10, 30, "what the broker kept")
            await _publish_events(broker.port, topic, range(51, 52))  # the device's next event shows the gap
            await eventually(lambda: 51 in _seqs(agent.store), 30, "seq 51 handled")
            arrived = len(_seqs(agent.store)) - 1  # of seq 1..50
            assert arrived == 10  # the queue's limit
            assert agent.stats.seq_gaps["wearable"] == 50 - arrived
            assert agent.stats.alarms["seq_gap"] == 1
            await eventually(lambda: agent.stats.broker_dropped == 50 - arrived, 30, "the broker's $SYS counter")
            assert agent.stats.alarms["broker_dropped"] == 1


def _seqs(store: Store) -> set[int]:
    return {int(row[0]) for row in store.db.execute("SELECT seq FROM inbox WHERE device = 'W1'")}
