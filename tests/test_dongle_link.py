"""DongleLink and its protocol core: pending ACKs, duplicates, boots, bad input, port loss
(real pseudo-terminals, no mocks)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from edge_agent.codec import frames
from edge_agent.errors import ProtocolError
from edge_agent.transports.dongle_link import DongleLink, DongleSettings
from edge_agent.transports.dongle_receiver import DongleMessage, DongleReceiver, decode_payload
from hardware.hil.ptybus import PtyBus

NONCE = b"\x01\x02\x03\x04"
BOOT = NONCE.hex()


def hello(seq: int = 1, nonce: bytes = NONCE) -> bytes:
    return frames.encode(frames.HELLO, seq, 0, nonce)


def sos(seq: int, dev: int = 42, battery: int = 90) -> bytes:
    return frames.encode(frames.SOS, seq, dev, bytes([battery]))


def ack_seqs(acks: list[bytes]) -> list[int]:
    d = frames.Decoder()
    out = [r for a in acks for r in d.feed(a)]
    assert all(isinstance(r, frames.Frame) and r.kind == frames.ACK for r in out)
    return [r.seq for r in out if isinstance(r, frames.Frame)]


def commit(rx: DongleReceiver, messages: list[DongleMessage]) -> list[bytes]:
    """The consumer commits each message and acks it: the ACK frames the link would write."""
    out = []
    for m in messages:
        ack = rx.ack(m)
        assert ack is not None, m
        out.append(ack)
    return out


def booted(window: int = 128) -> DongleReceiver:
    """A receiver that has seen and committed the dongle's HELLO (nonce NONCE, seq 1)."""
    rx = DongleReceiver(window)
    msgs, acks = rx.feed(hello())
    assert acks == []
    assert ack_seqs(commit(rx, msgs)) == [1]
    return rx


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


# --- the protocol core ------------------------------------------------------------------------


def test_a_new_frame_is_delivered_with_its_ack_pending() -> None:
    rx = booted()
    msgs, acks = rx.feed(sos(2))
    assert msgs == [DongleMessage(42, "sos", 2, {"battery": 90}, BOOT)]
    assert acks == []  # committed? not yet: no ACK
    assert rx.pending == 1
    assert ack_seqs(commit(rx, msgs)) == [2]
    assert rx.pending == 0
    assert rx.ack(msgs[0]) is None  # acked once; a second ack() writes nothing
    assert rx.stats.acks_ignored == 1


def test_copies_of_a_pending_frame_are_ignored_and_of_an_acked_one_acked_again() -> None:
    rx = booted()
    msgs, acks = rx.feed(sos(2) + sos(2) + sos(2))
    assert [m.seq for m in msgs] == [2]
    assert acks == []
    assert rx.stats.duplicates_pending == 2
    commit(rx, msgs)
    msgs, acks = rx.feed(sos(2))
    assert msgs == []
    assert ack_seqs(acks) == [2]  # our earlier ACK was lost: ACK the copy, deliver nothing
    assert rx.stats.duplicates == 1


def test_nack_forgets_the_message_so_the_retransmission_is_delivered() -> None:
    rx = booted()
    msgs, _ = rx.feed(sos(2))
    assert rx.nack(msgs[0]) is True
    assert rx.ack(msgs[0]) is None  # nacked: acking it later writes nothing
    again, acks = rx.feed(sos(2))
    assert again == msgs
    assert acks == []
    assert ack_seqs(commit(rx, again)) == [2]
    assert rx.nack(again[0]) is False  # already acked


def test_a_new_boot_is_delivered_as_hello_and_switches_only_when_acked() -> None:
    rx = booted()
    msgs, _ = rx.feed(sos(2))
    commit(rx, msgs)
    old_pending, _ = rx.feed(sos(3))  # being committed when the dongle reboots
    new_nonce = b"\x09\x09\x09\x09"
    msgs, acks = rx.feed(hello(nonce=new_nonce) + hello(nonce=new_nonce))
    assert msgs == [DongleMessage(0, "hello", 1, {}, new_nonce.hex())]
    assert acks == []
    assert rx.boot == BOOT  # not committed yet
    assert rx.feed(sos(2, dev=7)) == ([], [])  # data waits for the boot to be committed
    assert rx.stats.rejected["hello_pending"] == 1
    assert ack_seqs(commit(rx, msgs)) == [1]
    assert rx.boot == new_nonce.hex()
    assert rx.ack(old_pending[0]) is None  # meant for the previous boot: never to its successor
    msgs, _ = rx.feed(sos(2, dev=7))  # seqs start over: seq 2 is new again
    assert msgs == [DongleMessage(7, "sos", 2, {"battery": 90}, new_nonce.hex())]
    assert ack_seqs(rx.feed(hello(nonce=new_nonce))[1]) == [1]  # a copy of the committed HELLO
    assert rx.stats.boots == 2


def test_a_nacked_hello_is_delivered_again() -> None:
    rx = DongleReceiver()
    msgs, _ = rx.feed(hello())
    rx.nack(msgs[0])
    assert rx.boot == ""
    again, acks = rx.feed(hello())
    assert (again, acks) == (msgs, [])


def test_a_newer_hello_replaces_a_pending_one() -> None:
    rx = DongleReceiver()
    first, _ = rx.feed(hello(nonce=b"\x01\x01\x01\x01"))
    second, _ = rx.feed(hello(nonce=b"\x02\x02\x02\x02"))
    assert rx.ack(first[0]) is None
    assert ack_seqs(commit(rx, second)) == [1]
    assert rx.boot == "02020202"


def test_initial_boot_is_known_before_any_hello() -> None:
    rx = DongleReceiver(initial_boot=BOOT)
    msgs, _ = rx.feed(sos(5))
    assert msgs[0].boot == BOOT
    commit(rx, msgs)
    msgs, acks = rx.feed(hello())  # the previous run committed it; its ACK was lost
    assert msgs == []
    assert ack_seqs(acks) == [1]
    assert ack_seqs(rx.feed(sos(5))[1]) == [5]  # same boot: the window was kept
    assert rx.feed(hello(seq=9))[1] == []  # same nonce, another seq: not a copy, not ACKed
    with pytest.raises(ValueError, match="boot nonce"):
        DongleReceiver(initial_boot="0102")
    with pytest.raises(ValueError, match="boot nonce"):
        DongleSettings("/dev/null", initial_boot="xyz")


def test_hello_of_the_wrong_length_is_rejected() -> None:
    rx = DongleReceiver()
    assert rx.feed(frames.encode(frames.HELLO, 1, 0, b"\x01\x02")) == ([], [])
    assert rx.stats.rejected == {"bad_payload": 1}


def test_bad_payload_is_counted_and_never_acked() -> None:
    rx = booted()
    msgs, acks = rx.feed(frames.encode(frames.SOS, 5, 1, b"") + sos(6))
    assert [m.seq for m in msgs] == [6]
    assert acks == []
    assert rx.stats.rejected == {"bad_payload": 1}


def test_no_room_means_no_delivery_and_no_ack() -> None:
    rx = booted()
    msgs, acks = rx.feed(sos(1) + sos(2) + sos(3), room=2)
    assert [m.seq for m in msgs] == [1, 2]
    assert acks == []
    assert rx.stats.rejected == {"queue_full": 1}
    msgs, acks = rx.feed(sos(3), room=1)
    assert [m.seq for m in msgs] == [3]


def test_too_many_unsettled_messages_stop_delivery() -> None:
    rx = DongleReceiver(max_pending=2)
    msgs, _ = rx.feed(sos(1) + sos(2) + sos(3))
    assert [m.seq for m in msgs] == [1, 2]
    assert rx.stats.rejected == {"pending_full": 1}
    commit(rx, msgs[:1])
    assert [m.seq for m in rx.feed(sos(3))[0]] == [3]


def test_window_forgets_old_seqs() -> None:
    rx = DongleReceiver(window=4)
    for seq in range(1, 10):
        commit(rx, rx.feed(sos(seq))[0])
    assert rx.feed(sos(9)) == ([], [frames.encode(frames.ACK, 9, 42)])  # still remembered
    assert [m.seq for m in rx.feed(sos(1))[0]] == [1]  # forgotten: a wrapped seq is new again


def test_same_seq_other_content_is_never_acked_unseen() -> None:
    rx = booted()
    commit(rx, rx.feed(sos(2, dev=1))[0])
    msgs, acks = rx.feed(sos(2, dev=2))  # not a copy of what was acked
    assert [(m.device_id, m.seq) for m in msgs] == [(2, 2)]
    assert acks == []
    assert rx.stats.seq_reused == 1
    assert rx.feed(sos(2, dev=3)) == ([], [])  # other content while 2 is pending: ignored
    assert rx.stats.rejected == {"seq_conflict": 1}


def test_settling_a_foreign_message_does_nothing() -> None:
    rx = booted()
    msgs, _ = rx.feed(sos(2))
    forged = DongleMessage(42, "sos", 2, {"battery": 91}, BOOT)
    other_boot = DongleMessage(42, "sos", 2, {"battery": 90}, "ffffffff")
    for message in (forged, other_boot, DongleMessage(0, "hello", 1, {}, "aabbccdd")):
        assert rx.ack(message) is None
        assert rx.nack(message) is False
    assert rx.pending == 1
    assert ack_seqs(commit(rx, msgs)) == [2]


def test_a_bug_on_one_frame_costs_only_that_frame(caplog: pytest.LogCaptureFixture) -> None:
    class Faulty(DongleReceiver):
        def _on_frame(self, frame: frames.Frame, messages: list[DongleMessage], acks: list[bytes], room: int) -> None:
            if frame.seq == 3:
                raise RuntimeError("boom")
            super()._on_frame(frame, messages, acks, room)

    rx = Faulty(initial_boot=BOOT)
    msgs, acks = rx.feed(sos(2) + sos(3) + sos(4))
    assert [m.seq for m in msgs] == [2, 4]
    assert acks == []
    assert rx.stats.rejected == {"internal_error": 1}
    assert "frame handling failed" in caplog.text


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
    """Each distinct seq is delivered exactly once, whatever garbage or copies surround it,
    by a consumer that acks what it gets."""
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
        commit(rx, msgs)
        delivered += [m.seq for m in msgs]
    assert delivered == expected  # in order, each once (the window outlasts 30 seqs)


# --- hostile input: an ACK only ever answers a committed message -----------------------------

KINDS = [frames.SOS, frames.FALL, frames.VITALS, frames.HEARTBEAT, frames.HELLO, frames.ACK, 0x06, 0x7F]
NONCES = [b"\x01\x02\x03\x04", b"\xaa\xbb\xcc\xdd", b"\x00\x00\x00\x00"]
RIGHT_LENGTH = {frames.SOS: 1, frames.FALL: 2, frames.VITALS: 4, frames.HEARTBEAT: 2, frames.HELLO: 4}


@st.composite
def frame_bytes(draw: st.DrawFn) -> bytes:
    """Mostly well-formed frames from a small space (so copies, seq clashes and reboots are
    common), sometimes with a wrong kind, length, version, or damaged on the way."""
    kind = draw(st.sampled_from(KINDS))
    n = RIGHT_LENGTH.get(kind, 1)
    if kind == frames.HELLO:
        payload = draw(st.sampled_from(NONCES) | st.binary(max_size=6))
    else:
        payload = draw(
            st.binary(min_size=n, max_size=n).map(lambda b: bytes(x & 1 for x in b)) | st.binary(max_size=64)
        )
    version = draw(st.sampled_from([1, 1, 1, 1, 2]))
    wire = frames.encode(kind, draw(st.integers(0, 3)), draw(st.sampled_from([0, 42])), payload, version)
    damage = draw(st.sampled_from(["none", "none", "none", "none", "truncate", "flip", "double"]))
    if damage == "truncate":
        return wire[: draw(st.integers(0, len(wire) - 1))]
    if damage == "flip":
        i = draw(st.integers(0, len(wire) - 1))
        return wire[:i] + bytes([wire[i] ^ draw(st.integers(1, 255))]) + wire[i + 1 :]
    if damage == "double":
        return wire + wire
    return wire


# A few frames that make the interesting cases likely: copies, seq clashes, reboots.
CANON = [
    hello(1, NONCES[0]),
    hello(2, NONCES[0]),
    hello(1, NONCES[1]),
    sos(2),
    sos(2, dev=7),
    sos(2, battery=1),
    sos(3),
    frames.encode(frames.FALL, 3, 42, b"\x01\x02"),
    frames.encode(frames.HEARTBEAT, 1, 42, b"\x50\xc4"),
]

stream_items = st.one_of(
    st.sampled_from(CANON),
    frame_bytes(),
    st.binary(max_size=90),  # garbage, sometimes longer than any frame
    st.tuples(st.sampled_from(["ack", "ack", "nack"]), st.integers(0, 5)),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(stream_items, max_size=80),
    st.lists(st.integers(1, 40), min_size=1, max_size=10),
    st.lists(st.integers(-1, 3), min_size=1, max_size=5),
)
# a HELLO with the committed nonce but another seq is not a copy of it
@example([CANON[0], ("ack", 0), CANON[1]], [40], [-1])
# a message pending when the dongle rebooted, acked after the new boot was committed
@example([CANON[0], ("ack", 0), CANON[3], CANON[2], ("ack", 0), ("ack", 1), CANON[3]], [7], [-1])
# the committed boot's HELLO again but from another device id: not a copy, not acked
@example(
    [
        b"\x00\x03\x01\x05\x02\x02\x01\x01\x01\x08\x04\x01\x02\x03\x049A\x00",
        ("ack", 0),
        b"\x03\x01\x05\x02\x02\x01\x01\t*\x04\x01\x02\x03\x04\x8aK\x00",
    ],
    [1],
    [1],
)
def test_every_ack_answers_a_message_the_consumer_committed(
    plan: list[bytes | tuple[str, int]], chunk_sizes: list[int], rooms: list[int]
) -> None:
    """Arbitrary frames (valid, damaged, wrong kinds, lengths, versions, nonces, seqs), garbage,
    any chunking, any room, and a consumer that acks, nacks or acks again at random: nothing
    raises, and every ACK the link would write answers a message the consumer acked (that
    message's own ACK, or a copy of its frame in the same boot)."""
    rx = DongleReceiver(window=3, max_pending=4)
    shadow = frames.Decoder()  # sees the same bytes: which frames completed in each chunk
    delivered: list[DongleMessage] = []
    committed: set[tuple[str, str, int, int, tuple[tuple[str, int], ...]]] = set()

    def key(m: DongleMessage) -> tuple[str, str, int, int, tuple[tuple[str, int], ...]]:
        return (m.boot, m.kind, m.seq, m.device_id, tuple(sorted(m.data.items())))

    def frame_key(f: frames.Frame, boot: str) -> tuple[str, str, int, int, tuple[tuple[str, int], ...]] | None:
        if f.kind == frames.HELLO:
            return (f.payload.hex(), "hello", f.seq, f.device_id, ())
        try:
            data = decode_payload(f.kind, f.payload)
        except ProtocolError:
            return None
        return (boot, frames.KIND_NAMES[f.kind], f.seq, f.device_id, tuple(sorted(data.items())))

    def check_copy_acks(chunk: bytes, acks: list[bytes]) -> None:
        done = [f for f in shadow.feed(chunk) if isinstance(f, frames.Frame)]
        for ack in acks:
            (a,) = frames.Decoder().feed(ack)
            assert isinstance(a, frames.Frame)
            assert a.kind == frames.ACK
            assert any(
                f.seq == a.seq and f.device_id == a.device_id and frame_key(f, rx.boot) in committed for f in done
            ), (a, done, committed)

    sizes = iter(chunk_sizes * 1000)
    room_of = iter(rooms * 1000)
    for item in plan:
        if isinstance(item, tuple):
            action, i = item
            if not delivered:
                continue
            m = delivered[-1 - i % len(delivered)]  # mostly the latest; sometimes an old, settled one
            if action == "nack":
                rx.nack(m)
                continue
            ack = rx.ack(m)
            if ack is not None:
                committed.add(key(m))
                (a,) = frames.Decoder().feed(ack)
                assert isinstance(a, frames.Frame)
                assert (a.kind, a.seq, a.device_id) == (frames.ACK, m.seq, m.device_id)
                assert m.boot == rx.boot  # never an ACK for a previous boot's frame
            continue
        data = item
        while data:
            n = next(sizes)
            chunk, data = data[:n], data[n:]
            room = next(room_of)
            msgs, acks = rx.feed(chunk, room)
            assert room < 0 or len(msgs) <= room
            assert rx.pending <= 4
            check_copy_acks(chunk, acks)
            delivered += msgs


def test_a_megabyte_of_garbage_is_counted_quickly_and_never_acked() -> None:
    rng = random.Random(5)
    blob = rng.randbytes(1 << 20)
    rx = booted()
    start = time.perf_counter()
    msgs, acks = rx.feed(blob)
    assert time.perf_counter() - start < 10
    assert acks == []
    assert all(m.kind in {"sos", "fall", "vitals", "heartbeat", "hello"} for m in msgs)
    assert sum(rx.stats.rejected.values()) > 0
    rx.feed(b"\x00")  # whatever the garbage left half-done ends at the next delimiter
    for m in msgs:  # whatever the garbage happened to form: not committed
        rx.nack(m)
    assert rx.pending == 0
    assert [m.seq for m in rx.feed(sos(200))[0]] == [200]  # the next valid frame still gets through


# --- the real link on a pty -------------------------------------------------------------------


class Wire:
    """What the link writes back to the dongle, seen on the pty."""

    def __init__(self, bus: PtyBus) -> None:
        self.sent: list[bytes] = []
        self._loop = asyncio.get_running_loop()
        self._more = asyncio.Event()
        bus.tap = self._tap

    def _tap(self, direction: str, data: bytes) -> None:
        if direction == "from_agent":
            self.sent.append(data)
            with contextlib.suppress(RuntimeError):  # the test's loop may be closed by now
                self._loop.call_soon_threadsafe(self._more.set)

    def acks(self) -> list[int]:
        return ack_seqs(self.sent)

    async def wait_acks(self, n: int, seconds: float = 10) -> list[int]:
        async with asyncio.timeout(seconds):
            while len(self.acks()) < n:
                self._more.clear()
                await self._more.wait()
        return self.acks()

    async def quiet(self, seconds: float = 0.3) -> None:
        """Nothing more is written for ``seconds`` (the link had time to answer)."""
        before = len(self.sent)
        await asyncio.sleep(seconds)
        assert self.sent[before:] == []


@pytest.fixture
def line(tmp_path: Path) -> Iterator[PtyBus]:
    bus = PtyBus(tmp_path / "ttyDONGLE").start()
    try:
        yield bus
    finally:
        bus.close()


async def no_message(link: DongleLink, seconds: float = 0.3) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(link.get(), seconds)


async def test_no_ack_is_on_the_wire_until_the_consumer_acks(line: PtyBus) -> None:
    wire = Wire(line)
    async with DongleLink(DongleSettings(str(line.link_path))) as link:
        await link.wait_connected(10)
        line.babble(b"\x00\x13garbage\x00" + hello())
        boot = await asyncio.wait_for(link.get(), 10)
        assert boot == DongleMessage(0, "hello", 1, {}, BOOT)
        await wire.quiet()
        assert wire.sent == []  # the nonce is not committed yet
        assert link.ack(boot) is True
        assert await wire.wait_acks(1) == [1]
        line.babble(sos(2))
        msg = await asyncio.wait_for(link.get(), 10)
        assert msg == DongleMessage(42, "sos", 2, {"battery": 90}, BOOT)
        await wire.quiet()
        assert wire.acks() == [1]  # delivered, not committed: no ACK byte for seq 2
        assert link.ack(msg) is True
        assert await wire.wait_acks(2) == [1, 2]
        assert link.stats.rejected.get("bad_cobs", 0) + link.stats.rejected.get("truncated", 0)


async def test_a_copy_received_while_pending_is_not_delivered_again(line: PtyBus) -> None:
    wire = Wire(line)
    async with DongleLink(DongleSettings(str(line.link_path), initial_boot=BOOT)) as link:
        await link.wait_connected(10)
        line.babble(sos(2))
        msg = await asyncio.wait_for(link.get(), 10)
        line.babble(sos(2) + sos(2))  # the dongle retransmits while we commit
        await no_message(link)
        assert link.stats.duplicates_pending == 2
        assert wire.sent == []
        link.ack(msg)
        assert await wire.wait_acks(1) == [2]


async def test_after_nack_the_retransmission_is_delivered(line: PtyBus) -> None:
    wire = Wire(line)
    async with DongleLink(DongleSettings(str(line.link_path), initial_boot=BOOT)) as link:
        await link.wait_connected(10)
        line.babble(sos(2))
        msg = await asyncio.wait_for(link.get(), 10)
        link.nack(msg)  # the store could not commit it
        line.babble(sos(2))
        assert await asyncio.wait_for(link.get(), 10) == msg
        await wire.quiet()
        assert wire.sent == []
        assert link.stats.delivered == 2


async def test_after_ack_a_copy_is_acked_again_and_not_delivered(line: PtyBus) -> None:
    wire = Wire(line)
    async with DongleLink(DongleSettings(str(line.link_path), initial_boot=BOOT)) as link:
        await link.wait_connected(10)
        line.babble(sos(2))
        link.ack(await asyncio.wait_for(link.get(), 10))
        assert await wire.wait_acks(1) == [2]
        line.babble(sos(2))  # our ACK was lost on the way
        assert await wire.wait_acks(2) == [2, 2]
        await no_message(link)
        assert link.stats.duplicates == 1
        assert link.stats.acks == 2


async def test_a_link_built_with_the_previous_nonce_keeps_it_as_known(line: PtyBus) -> None:
    """After a gateway restart: the nonce comes from the store, not from a HELLO."""
    wire = Wire(line)
    async with DongleLink(DongleSettings(str(line.link_path), initial_boot=BOOT)) as link:
        assert link.boot == BOOT
        await link.wait_connected(10)
        line.babble(sos(5))  # the frame in flight when the gateway died
        msg = await asyncio.wait_for(link.get(), 10)
        assert msg.boot == BOOT  # the agent's persisted (boot, seq) check can recognise it
        link.ack(msg)
        assert await wire.wait_acks(1) == [5]
        line.babble(hello())  # the HELLO the previous run committed, its ACK lost
        assert await wire.wait_acks(2) == [5, 1]
        await no_message(link)  # not a new boot
        line.babble(sos(5))
        assert await wire.wait_acks(3) == [5, 1, 5]  # the window survived that HELLO
        await no_message(link)
        line.babble(hello(nonce=b"\x07\x07\x07\x07"))  # a real reboot is still a new boot
        new = await asyncio.wait_for(link.get(), 10)
        assert (new.kind, new.boot) == ("hello", "07070707")
        assert link.boot == BOOT  # until the consumer committed it
        link.ack(new)
        assert link.boot == "07070707"


async def test_ack_while_the_port_is_gone_writes_nothing_and_the_copy_is_acked(line: PtyBus) -> None:
    async with DongleLink(DongleSettings(str(line.link_path), initial_boot=BOOT, reopen_max=0.1)) as link:
        await link.wait_connected(10)
        line.babble(sos(4))
        msg = await asyncio.wait_for(link.get(), 10)
        line.unplug()
        async with asyncio.timeout(10):
            await link.disconnected.wait()
        assert link.ack(msg) is False
        assert link.stats.rejected["ack_no_port"] == 1
        line.replug()
        wire = Wire(line)
        await link.wait_connected(10)
        line.babble(sos(4))  # the dongle retransmits
        assert await wire.wait_acks(1) == [4]
        await no_message(link)


async def test_a_hostile_burst_never_raises_or_acks(line: PtyBus) -> None:
    wire = Wire(line)
    rng = random.Random(11)
    async with DongleLink(DongleSettings(str(line.link_path), initial_boot=BOOT, queue_size=8)) as link:
        await link.wait_connected(10)
        damaged = bytearray(sos(3))
        damaged[5] ^= 0x40
        burst = (
            rng.randbytes(200_000)
            + bytes(damaged)
            + sos(3)[:-4]
            + frames.encode(frames.SOS, 3, 42, b"\x01\x02")  # wrong payload length
            + frames.encode(0x66, 3, 42, b"\x01")  # unknown kind
            + b"\x01" * 500  # longer than any frame
            + b"\x00"
        )
        for i in range(0, len(burst), 4096):
            line.babble(burst[i : i + 4096])
        line.babble(sos(9))
        async with asyncio.timeout(20):
            while True:
                msg = await link.get()
                if msg.seq == 9 and msg.device_id == 42 and msg.kind == "sos":
                    break
                link.nack(msg)  # whatever the garbage happened to form: not committed
        assert wire.sent == []
        assert {"bad_crc", "bad_payload", "bad_kind", "oversized"} <= set(link.stats.rejected)
        link.ack(msg)
        assert await wire.wait_acks(1) == [9]


async def test_link_reopens_after_unplug(line: PtyBus) -> None:
    async with DongleLink(DongleSettings(str(line.link_path), reopen_max=0.1)) as link:
        await link.wait_connected(10)
        line.unplug()
        async with asyncio.timeout(10):
            await link.disconnected.wait()
        await asyncio.sleep(0.2)  # a few failed reopen attempts while the path is missing
        line.replug()
        await link.wait_connected(10)
        line.babble(sos(9))
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


def test_the_pty_is_real() -> None:
    """The fixtures above are kernel pseudo-terminals, as the dongle's USB CDC port is."""
    master, slave = os.openpty()
    try:
        assert os.isatty(slave)
    finally:
        os.close(master)
        os.close(slave)
