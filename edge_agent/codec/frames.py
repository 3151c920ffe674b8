"""Wearable dongle frame codec: header + payload + CRC-16, COBS-stuffed, 0x00-delimited.

Owns: the frame layout (see hardware/FRAMES.md), ``encode``/``encode_into`` and the streaming
``Decoder`` that drops garbage, truncated, wrong-CRC and oversized frames, counts them by
reason, and resynchronises on the next 0x00 so the following valid frame still parses.
Runs unchanged under CPython (as ``edge_agent.codec.frames``) and MicroPython (as ``frames``).
Must not import: anything of ours but ``crc``; no typing at run time, no dataclasses.

Raw frame (before COBS), all integers big-endian::

    0 version (1) | 1 kind (1) | 2 seq (2) | 4 device_id (4) | 8 length n (1)
    9 payload (n <= 64) | 9+n CRC-16/CCITT-FALSE over bytes 0 .. 8+n (2)

On the wire: 0x00, COBS(raw frame), 0x00. The leading delimiter makes a frame cut short by a
lost tail cost only that frame, never the next one.
"""

try:
    from edge_agent.codec.crc import crc16_ccitt  # type: ignore[import-not-found, unused-ignore]
except ImportError:  # MicroPython: the codec files sit on the module path
    from crc import crc16_ccitt  # type: ignore[import-not-found, no-redef, unused-ignore]

try:
    from micropython import const  # type: ignore[import-not-found, attr-defined, unused-ignore]
except ImportError:  # CPython

    def const(value: int) -> int:  # type: ignore[misc, unused-ignore]
        return value


VERSION = const(1)
HEADER_LEN = const(9)
CRC_LEN = const(2)
MAX_PAYLOAD = const(64)
MAX_RAW = const(75)  # HEADER_LEN + MAX_PAYLOAD + CRC_LEN
MAX_ENCODED = const(76)  # COBS adds one byte per 254 (and one at the start)
MAX_WIRE = const(78)  # leading and trailing 0x00

# Frame kinds. Data frames (< 0x80) are acknowledged with an ACK carrying the same seq.
SOS = const(0x01)
FALL = const(0x02)
VITALS = const(0x03)
HEARTBEAT = const(0x04)
HELLO = const(0x05)  # first frame after a dongle boots: the gateway resets its duplicate window
ACK = const(0x80)

KIND_NAMES = {
    SOS: "sos",
    FALL: "fall",
    VITALS: "vitals",
    HEARTBEAT: "heartbeat",
    HELLO: "hello",
    ACK: "ack",
}

# Rejection reasons (short, countable keys).
R_OVERSIZED = "oversized"
R_COBS = "bad_cobs"
R_SHORT = "truncated"
R_LENGTH = "bad_length"
R_CRC = "bad_crc"
R_VERSION = "bad_version"
R_KIND = "bad_kind"
REASONS = (R_OVERSIZED, R_COBS, R_SHORT, R_LENGTH, R_CRC, R_VERSION, R_KIND)


class Frame:
    """One decoded frame."""

    def __init__(self, kind: int, seq: int, device_id: int, payload: bytes, version: int = VERSION) -> None:
        self.kind = kind
        self.seq = seq
        self.device_id = device_id
        self.payload = payload
        self.version = version

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Frame):
            return False
        return (
            self.kind == other.kind
            and self.seq == other.seq
            and self.device_id == other.device_id
            and self.payload == other.payload
            and self.version == other.version
        )

    def __hash__(self) -> int:
        return hash((self.kind, self.seq, self.device_id, self.payload, self.version))

    def __repr__(self) -> str:
        # %-formatting: the common subset with MicroPython
        return "Frame(kind=%s, seq=%d, device_id=%d, payload=%r)" % (  # noqa: UP031
            KIND_NAMES.get(self.kind, str(self.kind)),
            self.seq,
            self.device_id,
            self.payload,
        )


_raw_scratch = bytearray(MAX_RAW)


def _check_fields(kind: int, seq: int, device_id: int, n: int) -> None:
    if n > MAX_PAYLOAD:
        raise ValueError("payload too long")
    if not 0 <= kind <= 0xFF or not 0 <= seq <= 0xFFFF or not 0 <= device_id <= 0xFFFFFFFF:
        raise ValueError("field out of range")


def encode_into(
    out: bytearray,
    kind: int,
    seq: int,
    device_id: int,
    payload: bytes | bytearray | memoryview = b"",
    version: int = VERSION,
) -> int:
    """Write the wire form (0x00, COBS, 0x00) of one frame into ``out`` (at least MAX_WIRE
    bytes) and return its length. Allocation-free: the firmware's send path."""
    n = len(payload)
    _check_fields(kind, seq, device_id, n)
    raw = _raw_scratch
    raw[0] = version & 0xFF
    raw[1] = kind
    raw[2] = seq >> 8
    raw[3] = seq & 0xFF
    raw[4] = (device_id >> 24) & 0xFF
    raw[5] = (device_id >> 16) & 0xFF
    raw[6] = (device_id >> 8) & 0xFF
    raw[7] = device_id & 0xFF
    raw[8] = n
    for i in range(n):
        raw[HEADER_LEN + i] = payload[i]
    end = HEADER_LEN + n
    crc = crc16_ccitt(raw, 0, end)
    raw[end] = crc >> 8
    raw[end + 1] = crc & 0xFF
    end += CRC_LEN
    # COBS: each block starts with a code byte = 1 + number of following non-zero bytes.
    out[0] = 0
    code_at = 1
    w = 2
    code = 1
    for i in range(end):
        b = raw[i]
        if b == 0:
            out[code_at] = code
            code_at = w
            w += 1
            code = 1
        else:
            out[w] = b
            w += 1
            code += 1
            if code == 0xFF:
                out[code_at] = code
                code_at = w
                w += 1
                code = 1
    out[code_at] = code
    out[w] = 0
    return w + 1


def encode(
    kind: int,
    seq: int,
    device_id: int,
    payload: bytes | bytearray | memoryview = b"",
    version: int = VERSION,
) -> bytes:
    """The wire form of one frame as new bytes (the agent's send path)."""
    out = bytearray(MAX_WIRE)
    n = encode_into(out, kind, seq, device_id, payload, version)
    return bytes(out[:n])


class Decoder:
    """Streaming decoder. Feed it bytes; it returns decoded ``Frame`` objects and, for each
    rejected frame, its reason string. Counters: ``frames`` (good) and ``rejected`` (by reason).
    Buffers are preallocated; ``feed_byte`` allocates only when a good frame completes."""

    def __init__(self) -> None:
        self._enc = bytearray(MAX_ENCODED)
        self._raw = bytearray(MAX_RAW)
        self._n = 0
        self._overflow = False
        self.frames = 0
        self.rejected = {}  # type: dict[str, int]

    def reset(self) -> None:
        """Forget a partial frame (e.g. after the port was reopened)."""
        self._n = 0
        self._overflow = False

    def _reject(self, reason: str) -> str:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        return reason

    def feed_byte(self, b: int) -> "Frame | str | None":
        """Consume one byte: None (frame incomplete or idle delimiter), a Frame, or a reason."""
        if b != 0:
            if self._n < MAX_ENCODED:
                self._enc[self._n] = b
                self._n += 1
            else:
                self._overflow = True
            return None
        n = self._n
        overflow = self._overflow
        self._n = 0
        self._overflow = False
        if overflow:
            return self._reject(R_OVERSIZED)
        if n == 0:
            return None  # idle delimiter between frames
        return self._decode(n)

    def feed(self, data: bytes | bytearray | memoryview) -> "list[Frame | str]":
        """Consume a chunk; return the frames and rejection reasons it completed, in order."""
        out = []  # type: list[Frame | str]
        for b in data:
            r = self.feed_byte(b)
            if r is not None:
                out.append(r)
        return out

    def _decode(self, n: int) -> "Frame | str":
        enc = self._enc
        raw = self._raw
        i = 0
        m = 0
        while i < n:
            code = enc[i]
            i += 1
            stop = i + code - 1
            if stop > n:
                return self._reject(R_COBS)
            if m + (stop - i) > MAX_RAW:
                return self._reject(R_OVERSIZED)
            while i < stop:
                raw[m] = enc[i]
                m += 1
                i += 1
            if code < 0xFF and i < n:
                if m >= MAX_RAW:
                    return self._reject(R_OVERSIZED)
                raw[m] = 0
                m += 1
        if m < HEADER_LEN + CRC_LEN:
            return self._reject(R_SHORT)
        length = raw[8]
        if length > MAX_PAYLOAD:
            return self._reject(R_OVERSIZED)
        if HEADER_LEN + length + CRC_LEN != m:
            return self._reject(R_SHORT if m < HEADER_LEN + length + CRC_LEN else R_LENGTH)
        end = HEADER_LEN + length
        if crc16_ccitt(raw, 0, end) != (raw[end] << 8) | raw[end + 1]:
            return self._reject(R_CRC)
        if raw[0] != VERSION:
            return self._reject(R_VERSION)
        kind = raw[1]
        if kind not in KIND_NAMES:
            return self._reject(R_KIND)
        self.frames += 1
        device_id = (raw[4] << 24) | (raw[5] << 16) | (raw[6] << 8) | raw[7]
        return Frame(kind, (raw[2] << 8) | raw[3], device_id, bytes(raw[HEADER_LEN:end]))
