"""Wearable dongle firmware (MicroPython) to the gateway's DongleLink over a lossy pty.

The consumer here plays the agent: it commits each message (a stand-in store: the dongle's
boot nonce, and the (boot, seq) of every committed frame next to the alerts it raised) and
only then acks it. A "crash" is leaving the link without acking."""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from dataclasses import dataclass, field

import pytest

from edge_agent.transports.dongle_link import DongleLink, DongleSettings
from edge_agent.transports.dongle_receiver import DongleMessage

from .conftest import DongleTarget, dongle_stats

pytestmark = [pytest.mark.hil, pytest.mark.timeout(60)]


@dataclass
class Store:
    """What the agent persists, in one transaction per message."""

    boot: str = ""
    seen: set[tuple[str, int]] = field(default_factory=set)  # (boot, seq) of committed frames
    alerts: list[DongleMessage] = field(default_factory=list)

    def commit(self, msg: DongleMessage) -> bool:
        """True if this is the first time; a known (boot, seq) is a redelivery: no new alert."""
        if msg.kind == "hello":
            self.boot = msg.boot
            return True
        if (msg.boot, msg.seq) in self.seen:
            return False
        self.seen.add((msg.boot, msg.seq))
        self.alerts.append(msg)
        return True


async def take(link: DongleLink, store: Store, *, commit_s: float = 0.0, ack: bool = True) -> DongleMessage:
    """The next data message, committed (and acked unless ``ack`` is False: a crash after the
    commit). HELLOs are committed and acked on the way."""
    while True:
        msg = await link.get()
        await asyncio.sleep(commit_s)  # the commit's fsync; the dongle retransmits meanwhile
        store.commit(msg)
        if msg.kind == "hello" or ack:
            assert link.ack(msg)
        if msg.kind != "hello":
            return msg


async def collect_until(link: DongleLink, store: Store, marker_device: int, seconds: float) -> list[DongleMessage]:
    out: list[DongleMessage] = []
    async with asyncio.timeout(seconds):
        while True:
            msg = await take(link, store, commit_s=0.04)
            out.append(msg)
            if msg.device_id == marker_device:
                return out


async def test_sos_arrives_exactly_once_under_loss_and_garbage(dongle_target: DongleTarget) -> None:
    line = dongle_target.line
    assert line is not None
    line.loss = 0.05  # of every byte, both ways
    line.loss_to_devices = 0.05
    store = Store()
    async with DongleLink(DongleSettings(dongle_target.port)) as link:
        await link.wait_connected(10)
        for i in range(20):
            os.write(dongle_target.radio, b"sos %d 90\n" % (100 + i))
            line.babble(b"\x00garbage\xff\x00" + bytes(range(1, 30)))
        os.write(dongle_target.radio, b"vitals 7 72 97 368\nhb 999 80 -60\n")
        msgs = await collect_until(link, store, 999, seconds=40)
        soses = Counter(m.device_id for m in msgs if m.kind == "sos")
        assert soses == Counter(range(100, 120))  # each SOS exactly once
        vitals = [m for m in msgs if m.kind == "vitals"]
        assert vitals == [
            DongleMessage(7, "vitals", vitals[0].seq, {"heart_rate": 72, "spo2": 97, "temp_dc": 368}, link.boot)
        ]
        assert msgs[-1].data == {"battery": 80, "rssi": -60}
        assert link.boot == store.boot != ""  # the dongle's HELLO was committed before any data
        assert {m.boot for m in msgs} == {store.boot}
        assert sum(link.stats.rejected.values()) > 0  # garbage and damaged frames were counted
        assert link.stats.duplicates_pending > 0  # retransmitted while we committed: ignored
        stats = await dongle_stats(dongle_target)
        assert stats["retransmits"] > 0  # the loss was real and recovered from
        assert link.stats.delivered == 22
        assert len(store.alerts) == 22


async def test_port_disappears_and_link_recovers(dongle_target: DongleTarget) -> None:
    line = dongle_target.line
    assert line is not None
    store = Store()
    async with DongleLink(DongleSettings(dongle_target.port, reopen_max=0.2)) as link:
        await link.wait_connected(10)
        os.write(dongle_target.radio, b"sos 1 50\n")
        assert (await asyncio.wait_for(take(link, store), 10)).device_id == 1
        line.unplug()
        async with asyncio.timeout(10):
            await link.disconnected.wait()
        os.write(dongle_target.radio, b"sos 2 50\n")  # raised while the cable is out
        await asyncio.sleep(0.3)
        line.replug()
        await link.wait_connected(10)
        msg = await asyncio.wait_for(take(link, store), 10)
        assert (msg.kind, msg.device_id) == ("sos", 2)
        assert link.stats.reopens >= 1
        os.write(dongle_target.radio, b"hb 3 70 -50\n")
        msg = await asyncio.wait_for(take(link, store), 10)
        assert msg.device_id == 3
        assert link.stats.delivered == 3


async def test_gateway_crashes_lose_no_sos_and_raise_none_twice(dongle_target: DongleTarget) -> None:
    """Crash after the commit (ACK never sent) and crash before it: after each restart, with
    the nonce from the store, the dongle's retransmission is recognised or delivered again."""
    store = Store()
    settings = DongleSettings(dongle_target.port, reopen_max=0.2)
    async with DongleLink(settings) as link:  # first run
        os.write(dongle_target.radio, b"sos 1 50\n")
        first = await asyncio.wait_for(take(link, store, ack=False), 10)  # committed, then dead
    assert store.boot != ""
    async with DongleLink(DongleSettings(settings.port, initial_boot=store.boot)) as link:  # restart
        again = await asyncio.wait_for(link.get(), 10)
        assert (again.boot, again.seq) == (first.boot, first.seq)  # the same frame, recognisable
        assert store.commit(again) is False  # the persisted (boot, seq): no second alert
        assert link.ack(again)  # but ACK it, so the dongle lets go
        os.write(dongle_target.radio, b"sos 2 50\n")
        lost = await asyncio.wait_for(link.get(), 10)  # dead before the commit: nothing stored
        assert lost.device_id == 2
    async with DongleLink(DongleSettings(settings.port, initial_boot=store.boot)) as link:  # restart
        second = await asyncio.wait_for(take(link, store), 10)
        assert (second.device_id, second.seq) == (2, lost.seq)  # the dongle still had it
        os.write(dongle_target.radio, b"hb 3 70 -50\n")
        assert (await asyncio.wait_for(take(link, store), 10)).device_id == 3
    assert [(m.kind, m.device_id) for m in store.alerts] == [("sos", 1), ("sos", 2), ("heartbeat", 3)]
    for _ in range(100):  # the last ACK may still be on its way to the dongle
        stats = await dongle_stats(dongle_target)
        if stats["acked"] >= 4:
            break
        await asyncio.sleep(0.05)
    assert stats["acked"] == 4  # HELLO, sos 1, sos 2, hb 3: each ACKed once, only when committed
