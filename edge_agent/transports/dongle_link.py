"""Gateway side of the wearable dongle link: frames in over a serial port, ACKs out.

Owns: opening the port (pyserial) and reopening it with capped exponential backoff when it
disappears, decoding frames with ``edge_agent.codec.frames``, acknowledging every data frame,
dropping duplicates by seq (a sliding window, reset by the dongle's HELLO), turning payloads
into ``DongleMessage`` values delivered exactly once, and counting rejected frames by reason.
Frame spec: hardware/FRAMES.md. Must not import: edge_agent.engine, .policy, .agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import TracebackType

import serial

from edge_agent.codec import frames
from edge_agent.errors import ProtocolError, TransportError

__all__ = [
    "DongleLink",
    "DongleMessage",
    "DongleReceiver",
    "DongleSettings",
    "LinkStats",
    "decode_payload",
]


@dataclass(frozen=True)
class DongleSettings:
    port: str
    baudrate: int = 115200
    window: int = 128  # how many recent seqs are remembered for duplicate detection
    reopen_min: float = 0.05  # backoff after the port disappears, doubling up to reopen_max
    reopen_max: float = 2.0
    queue_size: int = 4096


@dataclass(frozen=True)
class DongleMessage:
    device_id: int
    kind: str  # "sos" | "fall" | "vitals" | "heartbeat"
    seq: int
    data: dict[str, int]


@dataclass
class LinkStats:
    frames: int = 0
    delivered: int = 0
    duplicates: int = 0
    acks: int = 0
    hellos: int = 0
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


class DongleReceiver:
    """The link's protocol core, without a port: bytes in, (messages, ACK frames to send) out.

    Every accepted data frame is ACKed and delivered once; a copy (same seq inside the window)
    is ACKed again and dropped; a frame with a bad payload, or arriving beyond the ``room``
    the consumer has left, is not ACKed (the dongle keeps retransmitting it). A HELLO with a new
    boot nonce empties the duplicate window (the dongle rebooted and its seqs start over).
    """

    def __init__(self, window: int = 128) -> None:
        self.window = window
        self.stats = LinkStats()
        self._decoder = frames.Decoder()
        self._seen: deque[int] = deque()
        self._seen_set: set[int] = set()
        self._boot_nonce: bytes | None = None

    def reset_partial(self) -> None:
        self._decoder.reset()

    def count(self, reason: str) -> None:
        self.stats.rejected[reason] = self.stats.rejected.get(reason, 0) + 1

    def feed(self, data: bytes, room: int = -1) -> tuple[list[DongleMessage], list[bytes]]:
        """Decode ``data``; accept at most ``room`` new messages (-1: no limit)."""
        messages: list[DongleMessage] = []
        acks: list[bytes] = []
        for result in self._decoder.feed(data):
            if isinstance(result, str):
                self.count(result)
            else:
                self._on_frame(result, messages, acks, room)
        return messages, acks

    def _on_frame(self, frame: frames.Frame, messages: list[DongleMessage], acks: list[bytes], room: int) -> None:
        self.stats.frames += 1
        ack = frames.encode(frames.ACK, frame.seq, frame.device_id)
        if frame.kind == frames.ACK:
            self.count("unexpected_ack")
            return
        if frame.kind == frames.HELLO:
            acks.append(ack)
            self.stats.hellos += 1
            if frame.payload != self._boot_nonce:
                self._boot_nonce = frame.payload
                self._seen.clear()
                self._seen_set.clear()
            return
        try:
            data = decode_payload(frame.kind, frame.payload)
        except ProtocolError as exc:
            self.count(exc.reason)
            return
        if frame.seq in self._seen_set:
            acks.append(ack)  # our earlier ACK was lost: ACK the copy, deliver nothing
            self.stats.duplicates += 1
            return
        if 0 <= room <= len(messages):
            self.count("queue_full")  # no ACK: the dongle keeps it until there is room
            return
        acks.append(ack)
        self._seen.append(frame.seq)
        self._seen_set.add(frame.seq)
        if len(self._seen) > self.window:
            self._seen_set.discard(self._seen.popleft())
        messages.append(DongleMessage(frame.device_id, frames.KIND_NAMES[frame.kind], frame.seq, data))
        self.stats.delivered += 1


class DongleLink:
    """``async with DongleLink(settings) as link: async for msg in link: ...``"""

    def __init__(self, settings: DongleSettings) -> None:
        self.settings = settings
        self.receiver = DongleReceiver(settings.window)
        self.stats = self.receiver.stats
        self._queue: asyncio.Queue[DongleMessage] = asyncio.Queue(settings.queue_size)
        self._serial: serial.Serial | None = None
        self._lost: asyncio.Event = asyncio.Event()
        self.connected = asyncio.Event()  # set while the port is open
        self.disconnected = asyncio.Event()  # set while it is not
        self.disconnected.set()
        self._task: asyncio.Task[None] | None = None

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
            self.disconnected.clear()
            self.connected.set()
            try:
                await self._lost.wait()
            finally:
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
        messages, acks = self.receiver.feed(data, room)
        for ack in acks:
            try:
                os.write(fd, ack)
                self.stats.acks += 1
            except OSError:
                self.receiver.count("ack_write_failed")  # the dongle retransmits; we ACK the copy
        for msg in messages:  # fits: the receiver accepted no more than ``room``
            self._queue.put_nowait(msg)
