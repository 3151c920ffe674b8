"""Reliable sender to the gateway: a queue of packets (SOS and falls first), one frame in
flight, retransmitted every ``ack_timeout_ms`` until an ACK with its seq arrives (stop and
wait: frames reach the gateway in order, the gateway drops duplicates by seq).

The first frame after boot is HELLO (a random boot nonce), which resets the gateway's
duplicate window. Must not import: board modules.
"""

try:
    from edge_agent.codec import frames  # type: ignore[import-not-found, unused-ignore]
except ImportError:  # MicroPython
    import frames  # type: ignore[import-not-found, no-redef, unused-ignore]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fwtypes import DongleBoard

_MAX_QUEUE = 64
_URGENT = (frames.HELLO, frames.SOS, frames.FALL)


class Sender:
    def __init__(self, board: "DongleBoard", ack_timeout_ms: int = 50, nonce: int = 0) -> None:
        self.board = board
        self.ack_timeout_ms = ack_timeout_ms
        self.queue = []  # type: list[tuple[int, int, bytes]]
        self.wire = bytearray(frames.MAX_WIRE)
        self.wire_len = 0
        self.in_flight = False
        self.seq = 0
        self.sent_at = 0
        self.sent = 0
        self.retransmits = 0
        self.acked = 0
        self.dropped = 0
        self.decoder = frames.Decoder()
        self.push(frames.HELLO, 0, bytes([(nonce >> 24) & 0xFF, (nonce >> 16) & 0xFF,
                                          (nonce >> 8) & 0xFF, nonce & 0xFF]))

    def push(self, kind: int, device_id: int, payload: bytes) -> None:
        urgent = kind in _URGENT
        if len(self.queue) >= _MAX_QUEUE:
            for i in range(len(self.queue)):  # make room: drop the oldest routine packet
                if self.queue[i][0] not in _URGENT:
                    self.queue.pop(i)
                    self.dropped += 1
                    break
            else:
                if not urgent:
                    self.dropped += 1
                    return
        if urgent:
            i = 0
            while i < len(self.queue) and self.queue[i][0] in _URGENT and kind != frames.HELLO:
                i += 1
            self.queue.insert(i, (kind, device_id, payload))
        else:
            self.queue.append((kind, device_id, payload))

    def on_byte(self, b: int) -> None:
        r = self.decoder.feed_byte(b)
        if r is None or isinstance(r, str):
            return
        if r.kind == frames.ACK and self.in_flight and r.seq == self.seq:
            self.in_flight = False
            self.acked += 1

    def poll(self, now: int) -> None:
        """Send the next frame or retransmit the one in flight when its ACK is overdue."""
        board = self.board
        if self.in_flight:
            if board.ticks_diff(now, self.sent_at) >= self.ack_timeout_ms:
                board.write(self.wire, self.wire_len)
                self.sent_at = now
                self.retransmits += 1
            return
        if not self.queue:
            return
        kind, dev, payload = self.queue.pop(0)
        self.seq = (self.seq + 1) & 0xFFFF
        self.wire_len = frames.encode_into(self.wire, kind, self.seq, dev, payload)
        board.write(self.wire, self.wire_len)
        self.sent_at = now
        self.in_flight = True
        self.sent += 1

    def idle(self) -> bool:
        return not self.in_flight and not self.queue
