"""A tiny loopback TCP proxy for MQTT chaos runs: cut the uplink, or drop the connection
right after a QoS 1 PUBLISH has passed through (so the PUBACK never returns).

Owns: byte relaying between one listening port and one target (host, port). The client ->
broker direction is split into MQTT packets (fixed header + remaining length) so a fault can
be placed exactly after a whole PUBLISH. Loopback only; no TLS (it would hide the packets).

- ``cut()`` closes every relayed connection and refuses new ones until ``restore()``
  (refused = accepted and closed at once, like a dead uplink behind a NAT);
- ``drop_after_publishes(n, topic_contains)`` arms n faults: for each of the next n QoS 1
  PUBLISH packets whose topic contains ``topic_contains``, the broker -> client direction is
  stopped first, the PUBLISH (and everything before it) is handed to the broker, and both
  sides are closed. The broker got the message; the publisher never sees its PUBACK and must
  send it again: a duplicate the receiver drops by message id.
Must not import: anything of ours.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

PUBLISH = 3


def _remaining_length(buf: bytes | bytearray, start: int) -> tuple[int, int] | None:
    """MQTT variable byte integer at ``start``: (value, bytes used), None if incomplete."""
    value = 0
    for i in range(4):
        if start + i >= len(buf):
            return None
        byte = buf[start + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, i + 1
    raise ValueError("malformed MQTT remaining length")


@dataclass(eq=False)
class _Conn:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    closed: bool = False


class FlakyProxy:
    """``async with FlakyProxy(target_port) as proxy:`` then connect to ``proxy.port``."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1", *, port: int = 0) -> None:
        self.target = (target_host, target_port)
        self.host = "127.0.0.1"
        self.port = port
        self.up = True
        self._server: asyncio.Server | None = None
        self._conns: set[_Conn] = set()
        self._drops_armed = 0
        self._drop_topic = b""
        self.connections = 0  # relayed connections opened
        self.refused = 0  # connections refused while cut
        self.publishes = 0  # QoS 1 PUBLISH packets relayed to the broker
        self.drops = 0  # connections dropped right after a PUBLISH

    async def start(self) -> FlakyProxy:
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for conn in list(self._conns):
            await self._close(conn)

    async def __aenter__(self) -> FlakyProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ----- faults ----------------------------------------------------------------------------
    def cut(self) -> None:
        """The uplink goes down: every connection closes and new ones are refused."""
        self.up = False
        for conn in list(self._conns):
            self._abort(conn)

    def restore(self) -> None:
        self.up = True

    def drop_after_publishes(self, count: int, topic_contains: str = "") -> None:
        self._drops_armed = count
        self._drop_topic = topic_contains.encode()

    @property
    def drops_pending(self) -> int:
        return self._drops_armed

    # ----- relay -----------------------------------------------------------------------------
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            self.refused += 1
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            self.refused += 1
            writer.close()
            return
        if not self.up:  # cut while we were connecting
            self.refused += 1
            writer.close()
            up_writer.close()
            return
        self.connections += 1
        conn = _Conn(writer, up_writer)
        self._conns.add(conn)
        conn.tasks = [
            asyncio.create_task(self._client_to_broker(conn, reader)),
            asyncio.create_task(self._broker_to_client(conn, up_reader)),
        ]

    def _abort(self, conn: _Conn) -> None:
        if conn.closed:
            return
        conn.closed = True
        self._conns.discard(conn)
        current = asyncio.current_task()
        for task in conn.tasks:
            if task is not current:
                task.cancel()
        for writer in (conn.client, conn.upstream):
            with contextlib.suppress(Exception):
                writer.close()

    async def _close(self, conn: _Conn) -> None:
        self._abort(conn)
        for task in conn.tasks:
            if task is not asyncio.current_task():
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _broker_to_client(self, conn: _Conn, reader: asyncio.StreamReader) -> None:
        try:
            while not conn.closed:
                data = await reader.read(65536)
                if not data or conn.closed:
                    break
                conn.client.write(data)
                await conn.client.drain()
        except (OSError, ConnectionError):
            pass
        self._abort(conn)

    async def _client_to_broker(self, conn: _Conn, reader: asyncio.StreamReader) -> None:
        buf = bytearray()
        try:
            while not conn.closed:
                data = await reader.read(65536)
                if not data or conn.closed:
                    break
                buf += data
                out, cut_here = self._split(buf)
                if cut_here:
                    # stop the way back first, so no PUBACK can slip through, then hand
                    # the broker everything up to and including the PUBLISH, then close
                    for task in conn.tasks:
                        if task is not asyncio.current_task():
                            task.cancel()
                    with contextlib.suppress(Exception):
                        conn.client.close()
                    conn.upstream.write(bytes(out))
                    with contextlib.suppress(OSError, ConnectionError):
                        await conn.upstream.drain()
                    self.drops += 1
                    break
                if out:
                    conn.upstream.write(bytes(out))
                    await conn.upstream.drain()
        except (OSError, ConnectionError, ValueError):
            pass
        self._abort(conn)

    def _split(self, buf: bytearray) -> tuple[bytearray, bool]:
        """Take the complete packets off ``buf``; stop after a PUBLISH that must be dropped."""
        out = bytearray()
        while len(buf) >= 2:
            parsed = _remaining_length(buf, 1)
            if parsed is None:
                break
            length, used = parsed
            total = 1 + used + length
            if len(buf) < total:
                break
            packet = bytes(buf[:total])
            del buf[:total]
            out += packet
            kind, qos = packet[0] >> 4, (packet[0] >> 1) & 3
            if kind == PUBLISH and qos == 1:
                self.publishes += 1
                head = 1 + used
                topic_len = (packet[head] << 8) | packet[head + 1]
                topic = packet[head + 2 : head + 2 + topic_len]
                if self._drops_armed > 0 and self._drop_topic in topic:
                    self._drops_armed -= 1
                    return out, True
        return out, False
