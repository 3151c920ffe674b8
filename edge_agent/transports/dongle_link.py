"""Gateway side of the wearable dongle link: frames in over a serial port, ACKs out.

Owns: opening the port (pyserial) and reopening it with capped exponential backoff when it
disappears, decoding frames with ``edge_agent.codec.frames``, handing each new frame to the
consumer as a ``DongleMessage`` whose ACK is *pending*, writing that ACK only when the consumer
says the message is committed (``ack``) or forgetting it when it could not be (``nack``),
dropping copies by seq (pending ones silently, acknowledged ones with a fresh ACK), tagging
every message with the dongle's boot nonce, and counting rejected frames by reason.
Frame spec and the ACK rule: hardware/FRAMES.md. Must not import: edge_agent.engine, .policy,
.agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import TracebackType

import serial

from edge_agent.codec import frames
from edge_agent.errors import ProtocolError, TransportError

__all__ = [
    "NONCE_LEN",
    "DongleLink",
    "DongleMessage",
    "DongleReceiver",
    "DongleSettings",
    "LinkStats",
    "decode_payload",
    "parse_boot",
]

log = logging.getLogger("edge_agent.dongle")

NONCE_LEN = 4  # bytes of the boot nonce a HELLO carries


def parse_boot(boot: str) -> bytes:
    """A boot nonce as hex ("" = unknown) to bytes; ValueError if it is not one."""
    try:
        nonce = bytes.fromhex(boot)
    except ValueError:
        nonce = b"?"
    if len(nonce) not in (0, NONCE_LEN):
        raise ValueError(f"boot nonce must be {NONCE_LEN} bytes as hex, or empty; got {boot!r}")
    return nonce


@dataclass(frozen=True)
class DongleSettings:
    port: str
    baudrate: int = 115200
    window: int = 128  # how many recent acknowledged seqs are remembered for duplicate detection
    reopen_min: float = 0.05  # backoff after the port disappears, doubling up to reopen_max
    reopen_max: float = 2.0
    queue_size: int = 4096  # also the bound on messages delivered and not yet acked or nacked
    initial_boot: str = ""  # the dongle's boot nonce (hex) as last committed, e.g. before a restart

    def __post_init__(self) -> None:
        parse_boot(self.initial_boot)


@dataclass(frozen=True)
class DongleMessage:
    """One frame handed to the consumer. Its ACK is pending until ``ack`` (or ``nack``).

    ``kind`` is "sos" | "fall" | "vitals" | "heartbeat", or "hello" (device_id 0, empty data):
    the dongle booted with the nonce ``boot``; commit that nonce, then ack. ``boot`` is the
    dongle's boot nonce as hex ("" while none is known): (boot, seq) names one frame of one
    dongle, across gateway restarts, until seq wraps (65536 frames).
    """

    device_id: int
    kind: str
    seq: int
    data: dict[str, int]
    boot: str = ""


@dataclass
class LinkStats:
    frames: int = 0  # well-formed frames decoded
    delivered: int = 0  # data messages handed to the consumer (each delivery, redeliveries too)
    duplicates: int = 0  # copies of an acknowledged frame: ACKed again, not delivered
    duplicates_pending: int = 0  # copies of a frame delivered and not yet acked: ignored
    acks: int = 0  # ACK frames written to the port
    acks_ignored: int = 0  # ack()/nack() for a message that is not pending (already settled, stale)
    hellos: int = 0  # HELLO frames received
    boots: int = 0  # HELLOs with a new nonce handed to the consumer
    seq_reused: int = 0  # a new frame with the seq of an acknowledged one but other content
    reopens: int = 0
    rejected: dict[str, int] = field(default_factory=dict)


def decode_payload(kind: int, payload: bytes) -> dict[str, int]:
    """Payload bytes of a data frame to named integers; ProtocolError on a wrong length."""
    layouts: dict[int, tuple[str, ...]] = {
        frames.SOS: ("battery",),
        frames.FALL: ("severity", "battery"),
        frames.VITALS: ("heart_rate", "spo2", "temp_dc_hi", "temp_dc_lo"),
        frames.HEARTBEAT: ("battery", "rssi"),
    }
    names = layouts.get(kind)
    if names is None or len(payload) != len(names):
        raise ProtocolError("bad_payload", where="dongle", detail=f"kind {kind} len {len(payload)}")
    data = dict(zip(names, payload, strict=True))
    if kind == frames.VITALS:
        data["temp_dc"] = (data.pop("temp_dc_hi") << 8) | data.pop("temp_dc_lo")
    if kind == frames.HEARTBEAT and data["rssi"] > 127:
        data["rssi"] -= 256
    return data


# What makes a frame a copy of another with the same seq: (kind, device_id, payload).
_Print = tuple[int, int, bytes]


@dataclass(frozen=True)
class _Pending:
    message: DongleMessage
    print: _Print


class DongleReceiver:
    """The link's protocol core, without a port: bytes in, (messages, ACK frames to send) out.

    A new frame is delivered once and its ACK is *pending*: ``feed`` never ACKs it. The consumer
    commits the message and calls ``ack`` (which returns the ACK frame to write and moves the seq
    into the window of acknowledged seqs) or, when it could not commit, ``nack`` (forgotten:
    the dongle's next retransmission is delivered again). Copies of a pending frame are ignored
    (no ACK, no delivery); copies of an acknowledged frame are ACKed again by ``feed`` and
    dropped. A frame with a bad payload, or beyond the ``room`` the consumer has left, is not
    ACKed (the dongle keeps retransmitting it).

    The window and the nonce are per dongle, not per device_id: the dongle numbers all its
    frames with one seq counter and says HELLO once per boot. A HELLO with a new nonce is
    delivered (kind "hello") and pending like data; data frames wait (unACKed) until it is
    acked, which switches ``boot``, empties the window and forgets pending messages of the
    previous boot (that dongle is gone: an ACK meant for it must not reach its successor).
    ``initial_boot`` is the nonce the consumer last committed: a HELLO carrying it is a copy.
    """

    def __init__(self, window: int = 128, *, initial_boot: str = "", max_pending: int = 4096) -> None:
        self.window = window
        self.max_pending = max_pending
        self.stats = LinkStats()
        self._decoder = frames.Decoder()
        self._boot = parse_boot(initial_boot)
        self._hello_seq: int | None = None  # seq of the committed HELLO; None if known only from initial_boot
        self._acked: OrderedDict[int, _Print] = OrderedDict()  # seq -> print, oldest first
        self._pending: dict[int, _Pending] = {}  # data frames delivered, not yet acked or nacked
        self._pending_hello: _Pending | None = None

    @property
    def boot(self) -> str:
        """The dongle's committed boot nonce as hex ("" while none is known)."""
        return self._boot.hex()

    @property
    def pending(self) -> int:
        return len(self._pending) + (self._pending_hello is not None)

    def reset_partial(self) -> None:
        self._decoder.reset()

    def count(self, reason: str) -> None:
        self.stats.rejected[reason] = self.stats.rejected.get(reason, 0) + 1

    def feed(self, data: bytes, room: int = -1) -> tuple[list[DongleMessage], list[bytes]]:
        """Decode ``data``; deliver at most ``room`` new messages (-1: no limit). The ACK frames
        returned are for copies of acknowledged frames only, never for a message just delivered."""
        messages: list[DongleMessage] = []
        acks: list[bytes] = []
        for result in self._decoder.feed(data):
            if isinstance(result, str):
                self.count(result)
                continue
            try:
                self._on_frame(result, messages, acks, room)
            except Exception:  # a bug, not input: drop this frame (unACKed), keep the others
                log.exception("dongle: frame handling failed")
                self.count("internal_error")
        return messages, acks

    def ack(self, message: DongleMessage) -> bytes | None:
        """The consumer committed ``message``: the ACK frame to write, or None if the message is
        not pending (already acked or nacked, of a previous boot, or not ours): write nothing."""
        if message.kind == "hello":
            hello = self._pending_hello
            if hello is None or hello.message != message:
                self.stats.acks_ignored += 1
                return None
            self._pending_hello = None
            if message.boot != self.boot:  # the dongle rebooted: its seqs start over
                self._boot = parse_boot(message.boot)
                self._acked.clear()
                self._pending.clear()
            self._hello_seq = message.seq
            self._remember(message.seq, hello.print)
            return frames.encode(frames.ACK, message.seq, message.device_id)
        pending = self._pending.get(message.seq)
        if pending is None or pending.message != message:
            self.stats.acks_ignored += 1
            return None
        del self._pending[message.seq]
        self._remember(message.seq, pending.print)
        return frames.encode(frames.ACK, message.seq, message.device_id)

    def nack(self, message: DongleMessage) -> bool:
        """The consumer could not commit ``message``: forget it (no ACK); the dongle's next
        retransmission is delivered again. False if it was not pending."""
        hello = self._pending_hello
        if message.kind == "hello" and hello is not None and hello.message == message:
            self._pending_hello = None
            return True
        pending = self._pending.get(message.seq)
        if message.kind != "hello" and pending is not None and pending.message == message:
            del self._pending[message.seq]
            return True
        self.stats.acks_ignored += 1
        return False

    # --- internals ------------------------------------------------------------------------------
    def _remember(self, seq: int, print_: _Print) -> None:
        self._acked[seq] = print_
        self._acked.move_to_end(seq)
        while len(self._acked) > self.window:
            self._acked.popitem(last=False)

    def _has_room(self, messages: list[DongleMessage], room: int) -> bool:
        if 0 <= room <= len(messages):
            self.count("queue_full")  # no ACK: the dongle keeps it until there is room
            return False
        if self.pending >= self.max_pending:
            self.count("pending_full")  # the consumer is not settling what it was given
            return False
        return True

    def _on_frame(self, frame: frames.Frame, messages: list[DongleMessage], acks: list[bytes], room: int) -> None:
        self.stats.frames += 1
        if frame.kind == frames.ACK:
            self.count("unexpected_ack")
            return
        if frame.kind == frames.HELLO:
            self._on_hello(frame, messages, acks, room)
            return
        try:
            data = decode_payload(frame.kind, frame.payload)
        except ProtocolError as exc:
            self.count(exc.reason)
            return
        if self._pending_hello is not None:
            self.count("hello_pending")  # the dongle's boot is not committed yet: it retransmits
            return
        print_ = (frame.kind, frame.device_id, frame.payload)
        pending = self._pending.get(frame.seq)
        if pending is not None:
            if pending.print == print_:
                self.stats.duplicates_pending += 1  # being committed: the ACK follows ack()
            else:
                self.count("seq_conflict")  # not a copy; the dongle never does this
            return
        seen = self._acked.get(frame.seq)
        if seen == print_:
            acks.append(frames.encode(frames.ACK, frame.seq, frame.device_id))  # our ACK was lost
            self.stats.duplicates += 1
            return
        if not self._has_room(messages, room):
            return
        if seen is not None:  # same seq, other content: not a copy, so never ACK it unseen
            del self._acked[frame.seq]
            self.stats.seq_reused += 1
        message = DongleMessage(frame.device_id, frames.KIND_NAMES[frame.kind], frame.seq, data, self.boot)
        self._pending[frame.seq] = _Pending(message, print_)
        messages.append(message)
        self.stats.delivered += 1

    def _on_hello(self, frame: frames.Frame, messages: list[DongleMessage], acks: list[bytes], room: int) -> None:
        self.stats.hellos += 1
        if len(frame.payload) != NONCE_LEN:
            self.count("bad_payload")
            return
        print_ = (frame.kind, frame.device_id, frame.payload)
        if self._boot and frame.payload == self._boot:  # the committed boot: a copy of its HELLO
            if self._hello_seq is None:  # known from initial_boot: the HELLO a previous run committed
                self._hello_seq = frame.seq
                self._remember(frame.seq, print_)
            if frame.seq == self._hello_seq:
                acks.append(frames.encode(frames.ACK, frame.seq, frame.device_id))
                self.stats.duplicates += 1
            else:
                self.count("seq_conflict")
            return
        hello = self._pending_hello
        if hello is not None and hello.print == print_ and hello.message.seq == frame.seq:
            self.stats.duplicates_pending += 1
            return
        if hello is not None:  # rebooted again before we committed: the newer HELLO replaces it
            self._pending_hello = None
        if not self._has_room(messages, room):
            return
        message = DongleMessage(frame.device_id, "hello", frame.seq, {}, frame.payload.hex())
        self._pending_hello = _Pending(message, print_)
        messages.append(message)
        self.stats.boots += 1


class DongleLink:
    """``async with DongleLink(settings) as link: async for msg in link: commit(msg); link.ack(msg)``

    Every message's ACK waits for ``ack(msg)`` (after the consumer committed it durably) or is
    dropped by ``nack(msg)`` (it could not). Call both from the event loop's thread. A "hello"
    message says the dongle booted with nonce ``msg.boot``: persist it (it becomes the next
    run's ``DongleSettings.initial_boot``), then ack it; data waits until then.
    """

    def __init__(self, settings: DongleSettings) -> None:
        self.settings = settings
        self.receiver = DongleReceiver(
            settings.window, initial_boot=settings.initial_boot, max_pending=settings.queue_size
        )
        self.stats = self.receiver.stats
        self._queue: asyncio.Queue[DongleMessage] = asyncio.Queue(settings.queue_size)
        self._serial: serial.Serial | None = None
        self._fd: int | None = None  # the open port's descriptor, None while it is not open
        self._lost: asyncio.Event = asyncio.Event()
        self.connected = asyncio.Event()  # set while the port is open
        self.disconnected = asyncio.Event()  # set while it is not
        self.disconnected.set()
        self._task: asyncio.Task[None] | None = None

    @property
    def boot(self) -> str:
        """The dongle's committed boot nonce (hex, "" while unknown)."""
        return self.receiver.boot

    async def __aenter__(self) -> DongleLink:
        self._task = asyncio.create_task(self._run(), name="dongle-link")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._close()

    def __aiter__(self) -> AsyncIterator[DongleMessage]:
        return self

    async def __anext__(self) -> DongleMessage:
        return await self.get()

    async def get(self) -> DongleMessage:
        return await self._queue.get()

    def ack(self, message: DongleMessage) -> bool:
        """``message`` is committed: write its ACK. True if an ACK went out; False if the message
        was not pending or the port is gone (the dongle retransmits; that copy is ACKed)."""
        ack = self.receiver.ack(message)
        return ack is not None and self._write(ack)

    def nack(self, message: DongleMessage) -> None:
        """``message`` could not be committed: no ACK; its retransmission is delivered again."""
        self.receiver.nack(message)

    async def wait_connected(self, seconds: float) -> None:
        """Wait until the port is open; TransportError after ``seconds``."""
        try:
            async with asyncio.timeout(seconds):
                await self.connected.wait()
        except TimeoutError:
            raise TransportError(f"{self.settings.port}: not connected after {seconds} s") from None

    # --- port lifecycle ------------------------------------------------------------------------
    async def _run(self) -> None:
        delay = self.settings.reopen_min
        loop = asyncio.get_running_loop()
        while True:
            try:
                self._open()
            except TransportError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.reopen_max)
                continue
            delay = self.settings.reopen_min
            assert self._serial is not None
            fd = self._serial.fileno()
            self._lost.clear()
            loop.add_reader(fd, self._on_readable, fd)
            self._fd = fd
            self.disconnected.clear()
            self.connected.set()
            try:
                await self._lost.wait()
            finally:
                self._fd = None
                loop.remove_reader(fd)
                self.connected.clear()
                self.disconnected.set()
                self._close()
            self.stats.reopens += 1

    def _open(self) -> None:
        try:
            self._serial = serial.Serial(self.settings.port, self.settings.baudrate, timeout=0, exclusive=True)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise TransportError(f"{self.settings.port}: {exc}") from None
        self.receiver.reset_partial()

    def _close(self) -> None:
        if self._serial is not None:
            with contextlib.suppress(Exception):
                self._serial.close()
            self._serial = None

    def _write(self, frame: bytes) -> bool:
        fd = self._fd
        if fd is None:
            self.receiver.count("ack_no_port")  # the dongle retransmits after replug; we ACK the copy
            return False
        try:
            written = os.write(fd, frame)
        except OSError:
            written = -1
        if written != len(frame):  # a cut ACK costs only itself (the leading 0x00)
            self.receiver.count("ack_write_failed")  # the dongle retransmits; we ACK the copy
            return False
        self.stats.acks += 1
        return True

    def _on_readable(self, fd: int) -> None:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # hangup: the device went away
            self._lost.set()
            return
        room = self._queue.maxsize - self._queue.qsize()
        try:
            messages, acks = self.receiver.feed(data, room)
        except Exception:  # a decoder bug, not input: nothing was delivered; the dongle retransmits
            log.exception("dongle: decoding failed")
            self.receiver.count("internal_error")
            self.receiver.reset_partial()
            return
        for ack in acks:
            self._write(ack)
        for msg in messages:  # fits: the receiver accepted no more than ``room``
            self._queue.put_nowait(msg)
