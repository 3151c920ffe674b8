"""DongleLink and its protocol core: ACKs, duplicates, bad input, port loss (ptys, no mocks)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.codec import frames
from edge_agent.errors import ProtocolError
from edge_agent.transports.dongle_link import (
    DongleLink,
    DongleMessage,
    DongleReceiver,
    DongleSettings,
    decode_payload,
)
from hardware.hil.ptybus import PtyBus

NONCE = b"\x01\x02\x03\x04"


def hello(seq: int = 1, nonce: bytes = NONCE) -> bytes:
    return frames.encode(frames.HELLO, seq, 0, nonce)


def sos(seq: int, dev: int = 42, battery: int = 90) -> bytes:
    return frames.encode(frames.SOS, seq, dev, bytes([battery]))


def ack_seqs(acks: list[bytes]) -> list[int]:
    d = frames.Decoder()
    out = [r for a in acks for r in d.feed(a)]
    assert all(isinstance(r, frames.Frame) and r.kind == frames.ACK for r in out)
    return [r.seq for r in out if isinstance(r, frames.Frame)]


def test_payload_layouts() -> None:
    assert decode_payload(frames.SOS, b"\x5a") == {"battery": 90}
    assert decode_payload(frames.FALL, b"\x02\x50") == {"severity": 2, "battery": 80}
    assert decode_payload(frames.VITALS, b"\x48\x61\x01\x70") == {
        "heart_rate": 72,
        "spo2": 97,
        "temp_dc": 368,
    }
    assert decode_payload(frames.HEARTBEAT, b"\x50\xc4") == {"battery": 80, "rssi": -60}
    with pytest.raises(ProtocolError) as err:
        decode_payload(frames.SOS, b"")
    assert err.value.reason == "bad_payload"


def test_duplicates_are_acked_again_and_dropped() -> None:
    rx = DongleReceiver()
    msgs, acks = rx.feed(hello() + sos(2) + sos(2) + sos(3))
    assert [m.seq for m in msgs] == [2, 3]
    assert ack_seqs(acks) == [1, 2, 2, 3]
    assert rx.stats.duplicates == 1
    assert msgs[0] == DongleMessage(42, "sos", 2, {"battery": 90})


def test_hello_with_new_nonce_resets_window_but_a_repeated_hello_does_not() -> None:
    rx = DongleReceiver()
    rx.feed(hello() + sos(2))
    msgs, _ = rx.feed(hello() + sos(2))  # retransmitted HELLO, then a copy of seq 2
    assert msgs == []
    msgs, _ = rx.feed(hello(nonce=b"\x09\x09\x09\x09") + sos(2, dev=7))  # dongle rebooted
    assert [(m.device_id, m.seq) for m in msgs] == [(7, 2)]


def test_bad_payload_is_counted_and_not_acked() -> None:
    rx = DongleReceiver()
    msgs, acks = rx.feed(frames.encode(frames.SOS, 5, 1, b"") + sos(6))
    assert [m.seq for m in msgs] == [6]
    assert ack_seqs(acks) == [6]
    assert rx.stats.rejected == {"bad_payload": 1}


def test_no_room_means_no_ack_so_the_dongle_retries() -> None:
    rx = DongleReceiver()
    msgs, acks = rx.feed(sos(1) + sos(2) + sos(3), room=2)
    assert [m.seq for m in msgs] == [1, 2]
    assert ack_seqs(acks) == [1, 2]  # seq 3 is not ACKed: it was not taken
    assert rx.stats.rejected == {"queue_full": 1}
    msgs, acks = rx.feed(sos(3), room=1)
    assert [m.seq for m in msgs] == [3]


def test_window_forgets_old_seqs() -> None:
    rx = DongleReceiver(window=4)
    for seq in range(1, 10):
        rx.feed(sos(seq))
    assert rx.feed(sos(9))[0] == []  # still remembered
    assert [m.seq for m in rx.feed(sos(1))[0]] == [1]  # forgotten: a wrapped seq is new again


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 0xFFFF), st.binary(max_size=60), st.integers(0, 3)),
        min_size=1,
        max_size=30,
    )
)
def test_garbage_loss_and_repeats_deliver_each_frame_once(
    plan: list[tuple[int, bytes, int]],
) -> None:
    """Each distinct seq is delivered exactly once, whatever garbage or copies surround it."""
    rx = DongleReceiver(window=128)
    stream = bytearray()
    expected: list[int] = []
    for seq, garbage, copies in plan:
        wire = sos(seq)
        stream += garbage + wire * (1 + copies)
        if seq not in expected:
            expected.append(seq)
    delivered: list[int] = []
    for i in range(0, len(stream), 17):  # arbitrary chunking
        msgs, _ = rx.feed(bytes(stream[i : i + 17]))
        delivered += [m.seq for m in msgs]
    assert delivered == expected  # in order, each once (the window outlasts 30 seqs)


# --- the real link on a pty -------------------------------------------------------------------


@pytest.fixture
def line(tmp_path: Path) -> Iterator[PtyBus]:
    bus = PtyBus(tmp_path / "ttyDONGLE").start()
    try:
        yield bus
    finally:
        bus.close()


async def test_link_acks_on_the_wire_and_delivers_once(line: PtyBus) -> None:
    sent_back: list[bytes] = []
    got_ack = asyncio.Event()
    loop = asyncio.get_running_loop()

    def tap(direction: str, data: bytes) -> None:
        if direction == "from_agent":
            sent_back.append(data)
            loop.call_soon_threadsafe(got_ack.set)

    line.tap = tap
    async with DongleLink(DongleSettings(str(line.link_path))) as link:
        await link.wait_connected(10)
        line.babble(b"\x00\x13garbage\x00" + hello() + sos(2) + sos(2))
        msg = await asyncio.wait_for(link.get(), 10)
        assert msg == DongleMessage(42, "sos", 2, {"battery": 90})
        async with asyncio.timeout(10):
            while len(ack_seqs(sent_back)) < 3:
                got_ack.clear()
                await got_ack.wait()
        assert ack_seqs(sent_back) == [1, 2, 2]
        assert link.stats.rejected.get("bad_cobs", 0) + link.stats.rejected.get("truncated", 0)
        assert link.stats.duplicates == 1


async def test_link_reopens_after_unplug(line: PtyBus) -> None:
    async with DongleLink(DongleSettings(str(line.link_path), reopen_max=0.1)) as link:
        await link.wait_connected(10)
        line.unplug()
        async with asyncio.timeout(10):
            await link.disconnected.wait()
        await asyncio.sleep(0.2)  # a few failed reopen attempts while the path is missing
        line.replug()
        await link.wait_connected(10)
        line.babble(hello() + sos(9))
        assert (await asyncio.wait_for(link.get(), 10)).seq == 9
        assert link.stats.reopens == 1


async def test_link_starts_before_the_port_exists(tmp_path: Path) -> None:
    path = tmp_path / "ttyLATE"
    async with DongleLink(DongleSettings(str(path), reopen_max=0.1)) as link:
        await asyncio.sleep(0.2)
        assert not link.connected.is_set()
        with PtyBus(path) as late:
            await link.wait_connected(10)
            late.babble(sos(3))
            assert (await asyncio.wait_for(link.get(), 10)).seq == 3
