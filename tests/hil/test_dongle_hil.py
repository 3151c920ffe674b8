"""Wearable dongle firmware (MicroPython) to the gateway's DongleLink over a lossy pty."""

from __future__ import annotations

import asyncio
import os
from collections import Counter

import pytest

from edge_agent.transports.dongle_link import DongleLink, DongleMessage, DongleSettings

from .conftest import DongleTarget, dongle_stats

pytestmark = [pytest.mark.hil, pytest.mark.timeout(60)]


async def collect_until(link: DongleLink, marker_device: int, seconds: float) -> list[DongleMessage]:
    out: list[DongleMessage] = []
    async with asyncio.timeout(seconds):
        while True:
            msg = await link.get()
            out.append(msg)
            if msg.device_id == marker_device:
                return out


async def test_sos_arrives_exactly_once_under_loss_and_garbage(dongle_target: DongleTarget) -> None:
    line = dongle_target.line
    assert line is not None
    line.loss = 0.05  # of every byte, both ways
    line.loss_to_devices = 0.05
    async with DongleLink(DongleSettings(dongle_target.port)) as link:
        await link.wait_connected(10)
        for i in range(20):
            os.write(dongle_target.radio, b"sos %d 90\n" % (100 + i))
            line.babble(b"\x00garbage\xff\x00" + bytes(range(1, 30)))
        os.write(dongle_target.radio, b"vitals 7 72 97 368\nhb 999 80 -60\n")
        msgs = await collect_until(link, 999, seconds=40)
        soses = Counter(m.device_id for m in msgs if m.kind == "sos")
        assert soses == Counter(range(100, 120))  # each SOS exactly once
        vitals = [m for m in msgs if m.kind == "vitals"]
        assert vitals == [DongleMessage(7, "vitals", vitals[0].seq, {"heart_rate": 72, "spo2": 97, "temp_dc": 368})]
        assert msgs[-1].data == {"battery": 80, "rssi": -60}
        assert sum(link.stats.rejected.values()) > 0  # garbage and damaged frames were counted
        stats = await dongle_stats(dongle_target)
        assert stats["retransmits"] > 0  # the loss was real and recovered from
        assert link.stats.delivered == 22


async def test_port_disappears_and_link_recovers(dongle_target: DongleTarget) -> None:
    line = dongle_target.line
    assert line is not None
    async with DongleLink(DongleSettings(dongle_target.port, reopen_max=0.2)) as link:
        await link.wait_connected(10)
        os.write(dongle_target.radio, b"sos 1 50\n")
        assert (await asyncio.wait_for(link.get(), 10)).device_id == 1
        line.unplug()
        async with asyncio.timeout(10):
            await link.disconnected.wait()
        os.write(dongle_target.radio, b"sos 2 50\n")  # raised while the cable is out
        await asyncio.sleep(0.3)
        line.replug()
        await link.wait_connected(10)
        msg = await asyncio.wait_for(link.get(), 10)
        assert (msg.kind, msg.device_id) == ("sos", 2)
        assert link.stats.reopens >= 1
        os.write(dongle_target.radio, b"hb 3 70 -50\n")
        msg = await asyncio.wait_for(link.get(), 10)
        assert msg.device_id == 3
        assert link.stats.delivered == 3
