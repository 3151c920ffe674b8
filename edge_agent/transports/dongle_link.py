"""Gateway side of the wearable dongle link: frames in over a serial port, ACKs out.

Owns: opening the port (pyserial) and reopening it with capped exponential backoff when it
disappears, feeding what it reads to a ``DongleReceiver`` (edge_agent/transports/dongle_receiver.py:
frames to ``DongleMessage`` values whose ACK is *pending*, copies dropped by seq, the boot
nonce, rejected frames counted by reason), handing each new message to the consumer, and
writing its ACK only when the consumer says the message is committed (``ack``) or forgetting
it when it could not be (``nack``).
Frame spec and the ACK rule: hardware/FRAMES.md. Must not import: edge_agent.engine, .policy,
.agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType

import serial

from edge_agent.errors import TransportError
from edge_agent.transports.dongle_receiver import DongleMessage, DongleReceiver, parse_boot

__all__ = ["DongleLink", "DongleSettings"]

log = logging.getLogger("edge_agent.dongle")


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
