"""e. A serial port vanishing in the middle of an SOS frame (``DongleLink`` over a pty).

Owns: the one fault that needs no broker: the dongle's end of a pty whose slave appears at a
path (like /dev/serial/by-id), unplugged mid-frame and plugged back; the dongle retransmits
until ACKed (and once more, as if the ACK were lost); every SOS must be delivered exactly once.
The consumer plays the gateway: it counts each message (its commit), then ``ack``s it: only
then does ``DongleLink`` write the ACK (the link's contract since the ACK waits for a commit).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devtools.chaos.harness import wait_for, workdir
from devtools.chaos.scenario import Row


@dataclass
class SerialVanish:
    """``cuts`` SOS frames, each cut in the middle by the port vanishing."""

    cuts: int
    name = "serial"

    def title(self) -> str:
        return "serial port vanishes mid SOS frame"

    async def run(self, base: Path | None = None) -> Row:
        from edge_agent.codec import frames
        from edge_agent.transports.dongle_link import DongleLink, DongleSettings

        row = Row(self.title())
        with workdir(base, self.name) as tmp:
            path = Path(tmp) / "ttyDONGLE"
            pty = _Pty(path)
            delivered: dict[int, int] = {}
            started = time.monotonic()
            try:
                settings = DongleSettings(port=str(path), reopen_min=0.02, reopen_max=0.2)
                async with DongleLink(settings) as link:

                    async def consume() -> None:
                        """The gateway's side: count (= commit) each message, then ACK it."""
                        while True:
                            msg = await link.get()
                            if msg.kind != "hello":
                                delivered[msg.seq] = delivered.get(msg.seq, 0) + 1
                            link.ack(msg)

                    await link.wait_connected(10)
                    consumer = asyncio.create_task(consume())
                    await pty.send_until_acked(frames.encode(frames.HELLO, 1, 7, b"\x01\x02\x03\x04"), 1, frames)
                    for seq in range(2, self.cuts + 2):
                        frame = frames.encode(frames.SOS, seq, 7, bytes([80]))
                        pty.write(frame[: len(frame) // 2])
                        await asyncio.sleep(0.01)
                        reopens = link.stats.reopens
                        pty.unplug()
                        row.injections += 1
                        await wait_for(functools.partial(_more, link.stats, reopens), 10, "link noticed the loss")
                        pty.replug()
                        await link.wait_connected(10)
                        row.sent += 1
                        if not await pty.send_until_acked(frame, seq, frames):
                            row.failures.append(f"SOS {seq} never acked")
                        pty.write(frame)  # the dongle did not see the ACK: a retransmission
                    await asyncio.sleep(0.3)
                    consumer.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await consumer
                    row.delivered = sum(1 for seq in range(2, self.cuts + 2) if delivered.get(seq))
                    row.lost = row.sent - row.delivered
                    row.duplicates = link.stats.duplicates
                    twice = [s for s, n in delivered.items() if n > 1]
                    if twice:
                        row.failures.append(f"delivered more than once: {twice}")
                    row.drain_s = time.monotonic() - started
                    row.notes.append("duplicates = retransmissions ACKed again and dropped by seq")
            finally:
                pty.close()
        return row


async def serial_vanish(cuts: int, *, base: Path | None = None) -> Row:
    """An SOS frame cut in the middle by the port vanishing; the port returns, the dongle
    retransmits until ACKed (and once more, as if the ACK were lost): delivered exactly once."""
    return await SerialVanish(cuts).run(base)


def _more(stats: Any, before: int) -> bool:
    return int(stats.reopens) > before


class _Pty:
    """The dongle's end of a pty whose slave appears at ``path`` (like /dev/serial/by-id)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.master = -1
        self.slave = -1
        self._acks = bytearray()
        self.replug()

    def replug(self) -> None:
        import tty

        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        tmp = self.path.with_name(self.path.name + ".new")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(os.ttyname(self.slave))
        tmp.replace(self.path)

    def unplug(self) -> None:
        for fd in (self.master, self.slave):
            if fd >= 0:
                os.close(fd)
        self.master = self.slave = -1
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def close(self) -> None:
        self.unplug()

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    async def send_until_acked(self, frame: bytes, seq: int, frames: Any, timeout: float = 10.0) -> bool:
        decoder = frames.Decoder()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.write(frame)
            until = time.monotonic() + 0.2
            while time.monotonic() < until:
                try:
                    data = os.read(self.master, 4096)
                except BlockingIOError:
                    data = b""
                for result in decoder.feed(data) if data else []:
                    if not isinstance(result, str) and result.kind == frames.ACK and result.seq == seq:
                        return True
                await asyncio.sleep(0.01)
        return False
