"""The wearable dongle link's protocol core, without a port: bytes in, messages and ACKs out.

Owns: ``DongleReceiver`` (decoding frames with ``edge_agent.codec.frames``, the pending-ACK
bookkeeping: each new frame is delivered once as a ``DongleMessage`` whose ACK waits for
``ack``, or is forgotten on ``nack``; copies dropped by seq, pending ones silently, acknowledged
ones with a fresh ACK; the dongle's boot nonce), its counters (``LinkStats``) and the payload
layouts (``decode_payload``). The serial port around it: edge_agent/transports/dongle_link.py.
Frame spec and the ACK rule: hardware/FRAMES.md. Must not import: edge_agent.engine, .policy,
.agent.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field

from edge_agent.codec import frames
from edge_agent.errors import ProtocolError

__all__ = ["NONCE_LEN", "DongleMessage", "DongleReceiver", "LinkStats", "decode_payload", "parse_boot"]

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
        # (seq, device_id) of the committed HELLO; None if known only from initial_boot
        self._hello: tuple[int, int] | None = None
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
            self._hello = (message.seq, message.device_id)
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
            if self._hello is None:  # known from initial_boot: the HELLO a previous run committed
                self._hello = (frame.seq, frame.device_id)
                self._remember(frame.seq, print_)
            if (frame.seq, frame.device_id) == self._hello:  # its copy (another id: not what was committed)
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
