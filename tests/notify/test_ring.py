"""The ring channel (a missed call) against an AT modem on a real pseudo-terminal.

The gateway side is the real ``RingLink`` on a real pty through pyserial. The modem and the
phone network are the only parts emulated (devtools/modem_emulator.py: there is no SIM here);
what the tests check against is the emulator's own record of every command and call (when
dialled, when the far end rang, when and by whom it was ended), not what the link says.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest
import serial

from devtools.modem_emulator import Callee, ModemEmulator
from edge_agent.errors import PublishRefused, TransportError
from edge_agent.notify.report import NotifyLink, Report
from edge_agent.notify.ring import RingLink
from tests.agent.harness import eventually

DOC1, DOC2, DOC3 = "+8613800000001", "+8613800000002", "+8613800000003"
RING_S = 0.5  # the gateway's ring_seconds in these tests
LATE_S = 10.0  # generous: how much longer than asked a ring may last on a loaded machine


def link_on(modem: ModemEmulator, **settings: float) -> RingLink:
    return RingLink(modem.port, **{"ring_seconds": RING_S, "poll_seconds": 0.05, **settings})


@pytest.fixture
def modem() -> Iterator[ModemEmulator]:
    with ModemEmulator() as emulator:
        yield emulator


def test_it_is_a_notify_link() -> None:
    assert isinstance(RingLink("/dev/null"), NotifyLink)


async def test_each_ring_rings_for_ring_seconds_one_at_a_time_and_the_gateway_hangs_up(modem: ModemEmulator) -> None:
    link = link_on(modem)
    await link.wait_connected(10)
    assert link.connected
    topics = [f"ring/{DOC1}/a1", f"ring/{DOC2}/a2,a3"]
    assert await link.publish_many([(t, b"", 1, False) for t in topics]) == [None, None]

    first, second = modem.record()
    assert [first.number, second.number] == [DOC1, DOC2]
    for call in (first, second):
        assert call.ended_by == "gateway" and call.answered is None
        assert call.ringing_seconds is not None and RING_S <= call.ringing_seconds < RING_S + LATE_S
    assert first.ended is not None and second.dialled >= first.ended  # one call at a time
    # on the wire: echo off and verbose errors first, then each call placed and hung up
    sent = modem.commands
    assert sent[:3] == ["AT", "ATE0", "AT+CMEE=2"]
    assert sent.index(f"ATD{DOC1};") < sent.index("ATH") < sent.index(f"ATD{DOC2};")
    assert sent[-1] == "ATH"
    assert link.reports() == [Report(t, "delivered", f"rang {RING_S:g} s") for t in topics]
    assert link.reports() == []  # each reported once
    await link.close()


@pytest.mark.parametrize(
    ("callee", "code"),
    [(Callee(busy=True), "BUSY"), (Callee(unreachable=True), "NO CARRIER")],
    ids=["busy", "unreachable"],
)
async def test_a_call_that_never_rings_is_taken_and_reported_failed(callee: Callee, code: str) -> None:
    with ModemEmulator({DOC1: callee}) as modem:
        link = link_on(modem)
        await link.publish(f"ring/{DOC1}/a1", b"")  # taken: the call was placed
        [call] = modem.record()
        assert call.alerting is None and call.ended_by == "callee" and call.code == code
        [report] = link.reports()
        assert report.state == "failed" and f"({code})" in report.reason
        await link.close()


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"network": False}, "+CME ERROR: no network service"),
        ({"sim": False}, "+CME ERROR: SIM not inserted"),
        ({"dialtone": False}, "NO DIALTONE"),
    ],
    ids=["no-network", "no-sim", "no-dialtone"],
)
async def test_a_call_the_modem_refuses_stays_queued_and_is_reported_failed_once(
    settings: dict[str, bool], says: str
) -> None:
    with ModemEmulator(**settings) as modem:  # type: ignore[arg-type]
        link = link_on(modem)
        await link.wait_connected(10)  # the modem answers AT: it is the call it cannot make
        topic = f"ring/{DOC1}/a1"
        with pytest.raises(TransportError, match=re.escape(f"ring {DOC1}: ") + ".*" + re.escape(says)):
            await link.publish(topic, b"")
        assert modem.record() == []
        [report] = link.reports()
        assert report.topic == topic and report.state == "failed" and says in report.reason
        assert not link.connected  # the drain waits retry_seconds before it tries again
        with pytest.raises(TransportError, match=re.escape(says)):  # the drain's call: not connected, still why
            await link.publish_many([(topic, b"", 1, False)])
        with pytest.raises(TransportError, match=re.escape(says)):
            await link.publish(topic, b"")
        assert link.reports() == []  # the same row failing again is not news
        await link.close()


async def test_a_callee_who_rejects_the_ring_was_reached() -> None:
    with ModemEmulator({DOC1: Callee(rejects_after=0.2)}) as modem:
        link = link_on(modem, ring_seconds=60)
        async with asyncio.timeout(30):  # it does not wait out the 60 s
            await link.publish(f"ring/{DOC1}/a1", b"")
        [call] = modem.record()
        assert call.ended_by == "callee" and call.alerting is not None
        assert link.reports() == [Report(f"ring/{DOC1}/a1", "delivered", "rang, then the callee rejected it")]
        await link.close()


async def test_an_answered_ring_is_hung_up_at_once() -> None:
    with ModemEmulator({DOC1: Callee(answers_after=0.1)}) as modem:
        link = link_on(modem, ring_seconds=60)
        async with asyncio.timeout(30):
            await link.publish(f"ring/{DOC1}/a1", b"")
        [call] = modem.record()
        assert call.answered is not None and call.ended_by == "gateway"
        assert link.reports() == [Report(f"ring/{DOC1}/a1", "delivered", "answered")]
        await link.close()


async def test_unsolicited_codes_do_not_confuse_it() -> None:
    """``noise``: RING, +CLIP, +CREG, +QIND before every answer and an incoming call waiting in
    every call list; here also a stray NO CARRIER in the middle of the ring."""
    with ModemEmulator(noise=True) as modem:
        link = link_on(modem, ring_seconds=1.0)
        ring = asyncio.create_task(link.publish(f"ring/{DOC1}/a1", b""))
        await eventually(lambda: modem.record() and modem.record()[0].alerting, what="the far end ringing")
        modem.send("NO CARRIER")
        modem.send("RING")
        await ring
        [call] = modem.record()
        assert call.ended_by == "gateway" and call.ringing_seconds is not None
        assert 1.0 <= call.ringing_seconds < 1.0 + LATE_S
        assert link.reports() == [Report(f"ring/{DOC1}/a1", "delivered", "rang 1 s")]
        await link.close()


async def test_a_cancelled_ring_still_hangs_up(modem: ModemEmulator) -> None:
    link = link_on(modem, ring_seconds=60)
    ring = asyncio.create_task(link.publish(f"ring/{DOC1}/a1", b""))
    await eventually(lambda: modem.record() and modem.record()[0].alerting, what="the far end ringing")
    ring.cancel()
    with pytest.raises(asyncio.CancelledError):
        await ring
    [call] = modem.record()
    assert call.ended_by == "gateway"
    await link.close()


async def test_a_silent_modem_is_not_connected_and_takes_no_ring() -> None:
    with ModemEmulator(silent=True) as modem:
        link = link_on(modem, answer_seconds=0.3)
        with pytest.raises(TransportError, match=f"{modem.port} did not answer AT within"):
            await link.wait_connected(1)
        assert not link.connected
        with pytest.raises(TransportError, match="did not answer AT"):
            await link.publish(f"ring/{DOC1}/a1", b"")
        assert not any(c.startswith("ATD") for c in modem.commands)
        [report] = link.reports()
        assert report.state == "failed" and "did not answer AT" in report.reason
        await link.close()


async def test_a_missing_port_is_not_connected_and_takes_no_ring() -> None:
    port = "/dev/nonexistent-modem-port"
    link = RingLink(port)
    with pytest.raises(TransportError, match=port):
        await link.wait_connected(0.5)
    with pytest.raises(TransportError, match=port):
        await link.publish_many([(f"ring/{DOC1}/a1", b"", 1, False)])
    with pytest.raises(TransportError, match=port):
        await link.publish(f"ring/{DOC1}/a1", b"")
    [report] = link.reports()
    assert report.state == "failed" and port in report.reason


@pytest.mark.parametrize(
    "topic", [f"sms/{DOC1}/a1", "ring//a1", f"ring/{DOC1};ATH/a1", "ring/doctor-li/a1", f"ring/{DOC1}/a1/x"]
)
async def test_what_is_not_a_ring_topic_is_refused_by_name_and_the_rest_go_on(topic: str, modem: ModemEmulator) -> None:
    link = link_on(modem)
    await link.wait_connected(10)
    with pytest.raises(PublishRefused, match="not a ring topic") as refused:
        await link.publish(topic, b"")
    assert topic in str(refused.value)
    results = await link.publish_many([(topic, b"", 1, False), (f"ring/{DOC3}/a9", b"", 1, False)])
    assert isinstance(results[0], PublishRefused) and results[1] is None
    assert [c.number for c in modem.record()] == [DOC3]  # nothing else was dialled
    await link.close()


def test_the_emulator_runs_standalone_for_a_bench() -> None:
    """``python -m devtools.modem_emulator`` prints its port; a terminal program talks AT to it."""
    with subprocess.Popen(
        [sys.executable, "-m", "devtools.modem_emulator", "--busy", DOC1], stdout=subprocess.PIPE, text=True
    ) as emulator:
        try:
            assert emulator.stdout is not None
            port = emulator.stdout.readline().strip()
            with serial.Serial(port, 115200, timeout=10) as terminal:
                terminal.write(b"AT\r")
                assert terminal.read_until(b"OK\r\n").endswith(b"OK\r\n")
        finally:
            emulator.terminate()
