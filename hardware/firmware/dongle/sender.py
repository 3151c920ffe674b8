"""Reliable sender to the gateway: a queue of packets (SOS and falls first), one frame in
flight, retransmitted every ``ack_timeout_ms`` until an ACK with its seq arrives (stop and
wait: frames reach the gateway in order, the gateway drops duplicates by seq).

The first frame after boot is HELLO (a random boot nonce), which resets the gateway's
duplicate window.

Alarms survive a reboot (hardware/FRAMES.md, "Dongle reboots"): with a ``store`` the SOS and
FALL packets not yet ACKed are saved atomically (common/store.py) whenever they change: after
a push, before a frame's first transmission (so the gateway never sees a frame the flash does
not hold with its seq) and after its ACK. At most ``PERSIST_MAX`` are saved: the frame in
flight, then queued SOS oldest first, then queued falls (the excess stays in RAM only). At
boot the saved frame in flight is sent again first, unchanged (its previous boot's seq), before
the new HELLO: the gateway, still on that boot, names it (old nonce, seq) and drops it if it
already committed it; the saved queued packets follow the HELLO as new frames of the new boot.
Vitals and heartbeats stay in RAM (routine, superseded by the next; flash wear).
Must not import: board modules.
"""

try:
    from edge_agent.codec import frames  # type: ignore[import-not-found, unused-ignore]
except ImportError:  # MicroPython
    import frames  # type: ignore[import-not-found, no-redef, unused-ignore]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fwtypes import DongleBoard, RecordStore

_MAX_QUEUE = 64
_URGENT = (frames.HELLO, frames.SOS, frames.FALL)
PERSIST_MAX = 32  # alarm packets saved on flash (the frame in flight included)
_LAYOUT = 1
CUT_ACK = 0  # board.cut_point(0): an ACK for the frame in flight arrived, not yet handled


def _u32(b: "bytes | bytearray", i: int) -> int:
    return (b[i] << 24) | (b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]


def _put32(out: bytearray, v: int) -> None:
    out.append((v >> 24) & 0xFF)
    out.append((v >> 16) & 0xFF)
    out.append((v >> 8) & 0xFF)
    out.append(v & 0xFF)


class Sender:
    def __init__(self, board: "DongleBoard", ack_timeout_ms: int = 50, nonce: int = 0,
                 store: "RecordStore | None" = None) -> None:
        self.board = board
        self.ack_timeout_ms = ack_timeout_ms
        self.queue = []  # type: list[tuple[int, int, bytes]]
        self.wire = bytearray(frames.MAX_WIRE)
        self.wire_len = 0
        self.in_flight = False
        self.flight = (0, 0, b"")  # (kind, device_id, payload) of the frame in flight
        self.fseq = 0  # its seq
        self.fnonce = nonce  # the boot nonce it was first sent under (a restored frame: an old one)
        self.nonce = nonce
        self.seq = 0  # last seq assigned in this boot
        self.sent_at = 0
        self.sent = 0
        self.retransmits = 0
        self.acked = 0
        self.dropped = 0
        self.resent = 0  # frames of a previous boot sent again after a reboot
        self.saves = 0
        self.decoder = frames.Decoder()
        self.store = store
        self.dirty = False
        if store is not None:
            data = store.load()
            if data is not None:
                self.restore(data)
        self.push(frames.HELLO, 0, bytes([(nonce >> 24) & 0xFF, (nonce >> 16) & 0xFF,
                                          (nonce >> 8) & 0xFF, nonce & 0xFF]))

    # --- persistence ---------------------------------------------------------------------------
    def record(self) -> bytearray:
        """The saved alarms: layout, then the frame in flight (flag, nonce, seq, kind,
        device_id, length, payload), then a count and the queued ones (kind, device_id,
        length, payload); at most PERSIST_MAX frames, SOS before falls."""
        out = bytearray([_LAYOUT])
        n = 0
        kind, dev, payload = self.flight
        if self.in_flight and (kind == frames.SOS or kind == frames.FALL):
            out.append(1)
            _put32(out, self.fnonce)
            out.append(self.fseq >> 8)
            out.append(self.fseq & 0xFF)
            self._entry(out, kind, dev, payload)
            n = 1
        else:
            out.append(0)
        at = len(out)
        out.append(0)
        k = 0
        for want in (frames.SOS, frames.FALL):
            for kind, dev, payload in self.queue:
                if kind == want and n < PERSIST_MAX:
                    self._entry(out, kind, dev, payload)
                    n += 1
                    k += 1
        out[at] = k
        return out

    @staticmethod
    def _entry(out: bytearray, kind: int, dev: int, payload: bytes) -> None:
        out.append(kind)
        _put32(out, dev)
        out.append(len(payload))
        out.extend(payload)

    def restore(self, data: bytes) -> None:
        """The alarms saved by a previous boot (an unknown layout or a bad record: none)."""
        try:
            if data[0] != _LAYOUT:
                return
            i = 2
            flight = None
            if data[1]:
                fnonce = _u32(data, 2)
                fseq = (data[6] << 8) | data[7]
                n = data[13]
                flight = (data[8], _u32(data, 9), bytes(data[14 : 14 + n]))
                i = 14 + n
            queue = []
            j = i + 1
            for _ in range(data[i]):
                n = data[j + 5]
                queue.append((data[j], _u32(data, j + 1), bytes(data[j + 6 : j + 6 + n])))
                j += 6 + n
            if j != len(data):
                return
        except IndexError:
            return
        if flight is not None:  # sent again first, as it was: its old seq, not yet HELLO
            self.flight = flight
            self.fseq = fseq
            self.fnonce = fnonce
            self.wire_len = frames.encode_into(self.wire, flight[0], fseq, flight[1], flight[2])
            self.in_flight = True
            self.sent_at = self.board.ticks_ms()  # out again after one ACK timeout
            self.resent += 1
            self.board.log("resend seq=%d boot=%08x" % (fseq, fnonce))
        self.queue = queue

    def save(self) -> None:
        if self.store is not None:
            self.store.save(self.record())
            self.saves += 1
        self.dirty = False

    # --- queue and link ------------------------------------------------------------------------
    def push(self, kind: int, device_id: int, payload: bytes) -> None:
        urgent = kind in _URGENT
        if kind == frames.SOS or kind == frames.FALL:
            self.dirty = True  # saved before the next frame goes out (poll)
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
        if r.kind == frames.ACK and self.in_flight and r.seq == self.fseq:
            self.board.cut_point(CUT_ACK)
            self.in_flight = False
            self.acked += 1
            kind = self.flight[0]
            if kind == frames.SOS or kind == frames.FALL:
                self.dirty = True  # off the flash (a cut before that save: sent again, deduped)

    def poll(self, now: int) -> None:
        """Send the next frame or retransmit the one in flight when its ACK is overdue; save
        the alarms first when they changed."""
        board = self.board
        if self.in_flight:
            if self.dirty:
                self.save()
            if board.ticks_diff(now, self.sent_at) >= self.ack_timeout_ms:
                board.write(self.wire, self.wire_len)
                self.sent_at = now
                self.retransmits += 1
            return
        if not self.queue:
            if self.dirty:
                self.save()
            return
        kind, dev, payload = self.queue.pop(0)
        self.seq = (self.seq + 1) & 0xFFFF
        self.fseq = self.seq
        self.fnonce = self.nonce
        self.flight = (kind, dev, payload)
        self.in_flight = True
        if kind == frames.SOS or kind == frames.FALL:
            self.dirty = True
        if self.dirty:
            self.save()  # on flash with its seq before the gateway can see it
        self.wire_len = frames.encode_into(self.wire, kind, self.seq, dev, payload)
        board.write(self.wire, self.wire_len)
        self.sent_at = now
        self.sent += 1

    def idle(self) -> bool:
        return not self.in_flight and not self.queue
