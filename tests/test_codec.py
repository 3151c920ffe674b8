"""The shared codec (CRC-16s, dongle frames) under CPython and the MicroPython unix port."""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.codec import crc, frames
from hardware.hil.procs import CODEC_DIR, micropython_binary

DATA_KINDS = [frames.SOS, frames.FALL, frames.VITALS, frames.HEARTBEAT, frames.HELLO, frames.ACK]

frame_fields = st.tuples(
    st.sampled_from(DATA_KINDS),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.binary(max_size=frames.MAX_PAYLOAD),
)


def test_crc_check_values() -> None:
    assert crc.crc16_modbus(b"123456789") == 0x4B37  # CRC-16/MODBUS check value
    assert crc.crc16_ccitt(b"123456789") == 0x29B1  # CRC-16/CCITT-FALSE check value
    # a real Modbus request: read 2 holding registers at 0 from unit 1 -> C4 0B on the wire
    assert crc.crc16_modbus(bytes.fromhex("010300000002")) == 0x0BC4
    assert crc.crc16_modbus(b"xx123456789yy", 2, 11) == 0x4B37


@given(frame_fields)
def test_roundtrip(fields: tuple[int, int, int, bytes]) -> None:
    kind, seq, dev, payload = fields
    wire = frames.encode(kind, seq, dev, payload)
    assert wire[0] == 0
    assert wire[-1] == 0
    assert 0 not in wire[1:-1]
    assert len(wire) <= frames.MAX_WIRE
    d = frames.Decoder()
    assert d.feed(wire) == [frames.Frame(kind, seq, dev, payload)]
    assert d.rejected == {}


def test_encode_refuses_bad_fields() -> None:
    with pytest.raises(ValueError, match="payload too long"):
        frames.encode(frames.SOS, 1, 1, bytes(frames.MAX_PAYLOAD + 1))
    with pytest.raises(ValueError, match="out of range"):
        frames.encode(frames.SOS, 0x10000, 1)


@given(st.binary(max_size=300), frame_fields)
def test_garbage_then_valid_frame_still_parses(garbage: bytes, fields: tuple[int, int, int, bytes]) -> None:
    d = frames.Decoder()
    results = d.feed(garbage + frames.encode(*fields))
    assert results[-1] == frames.Frame(*fields)
    for r in results[:-1]:  # whatever the garbage produced, it is a frame or a known reason
        assert isinstance(r, frames.Frame) or r in frames.REASONS
    assert d.frames + sum(d.rejected.values()) == len(results)


@given(frame_fields, frame_fields, st.data())
def test_truncated_frame_is_dropped_and_next_parses(
    a: tuple[int, int, int, bytes], b: tuple[int, int, int, bytes], data: st.DataObject
) -> None:
    wa = frames.encode(*a)
    cut = data.draw(st.integers(2, len(wa) - 2))
    d = frames.Decoder()
    results = d.feed(wa[:cut] + frames.encode(*b))
    assert results[-1] == frames.Frame(*b)
    assert len(results) == 2
    assert results[0] in frames.REASONS


@given(frame_fields, st.data())
def test_corrupted_byte_is_rejected_never_misread(fields: tuple[int, int, int, bytes], data: st.DataObject) -> None:
    wire = bytearray(frames.encode(*fields))
    i = data.draw(st.integers(1, len(wire) - 2))
    wire[i] ^= data.draw(st.integers(1, 255))
    d = frames.Decoder()
    results = d.feed(bytes(wire) + frames.encode(*fields))
    assert results[-1] == frames.Frame(*fields)
    # CRC-16 catches every single-byte error: the damaged copy never decodes as a frame
    assert all(isinstance(r, str) for r in results[:-1])


def test_each_reason_is_counted() -> None:
    d = frames.Decoder()
    good = frames.encode(frames.SOS, 1, 2, b"\x05")
    bad_crc = bytearray(good)
    bad_crc[-2] ^= 0x01
    out = d.feed(bytes(bad_crc))  # wrong CRC
    out += d.feed(b"\x00" + b"\x01" * 200 + b"\x00")  # oversized
    out += d.feed(b"\x00\x05\x01\x02\x00")  # COBS code runs past the delimiter
    out += d.feed(b"\x00\x03\x01\x02\x00")  # too short for a header
    out += d.feed(frames.encode(frames.SOS, 1, 2, b"\x05", version=9))  # unknown version
    out += d.feed(frames.encode(0x42, 1, 2, b""))  # unknown kind
    assert out == ["bad_crc", "oversized", "bad_cobs", "truncated", "bad_version", "bad_kind"]
    assert d.rejected == dict.fromkeys(out, 1)
    assert d.feed(good) == [frames.Frame(frames.SOS, 1, 2, b"\x05")]


def test_wrong_length_byte_is_rejected() -> None:
    raw = bytearray([1, frames.SOS, 0, 1, 0, 0, 0, 2, 3, 9])  # says 3 payload bytes, has 1
    c = crc.crc16_ccitt(raw)
    raw += bytes([c >> 8, c & 0xFF])
    wire = _cobs(bytes(raw))
    d = frames.Decoder()
    assert d.feed(b"\x00" + wire + b"\x00") == ["truncated"]
    raw2 = bytearray([1, frames.SOS, 0, 1, 0, 0, 0, 2, 0, 9])  # says 0, has 1
    c = crc.crc16_ccitt(raw2)
    raw2 += bytes([c >> 8, c & 0xFF])
    assert d.feed(b"\x00" + _cobs(bytes(raw2)) + b"\x00") == ["bad_length"]


def _cobs(raw: bytes) -> bytes:
    out = bytearray()
    for block in raw.split(b"\x00"):
        while len(block) >= 254:
            out += b"\xff" + block[:254]
            block = block[254:]
        out += bytes([len(block) + 1]) + block
    return bytes(out)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=40), max_size=20))
def test_any_chunking_of_any_bytes_gives_the_same_results(chunks: list[bytes]) -> None:
    whole = b"".join(chunks)
    d1, d2 = frames.Decoder(), frames.Decoder()
    one = d1.feed(whole)
    many = [r for c in chunks for r in d2.feed(c)]
    assert one == many
    assert d1.rejected == d2.rejected


# --- the same code under MicroPython ----------------------------------------------------------


def _vectors(rng: random.Random) -> list[str]:
    lines = ["crc", "crc 313233343536373839"]
    for _ in range(200):
        kind = rng.choice(DATA_KINDS)
        payload = rng.randbytes(rng.randint(0, frames.MAX_PAYLOAD))
        lines.append(f"enc {kind} {rng.randint(0, 0xFFFF)} {rng.randint(0, 0xFFFFFFFF)} {payload.hex()}")
        lines.append(f"crc {payload.hex()}")
    for _ in range(200):
        parts = []
        for _ in range(rng.randint(0, 4)):
            wire = bytearray(
                frames.encode(
                    rng.choice(DATA_KINDS),
                    rng.randint(0, 0xFFFF),
                    rng.randint(0, 0xFFFFFFFF),
                    rng.randbytes(rng.randint(0, 70) % 65),
                )
            )
            roll = rng.random()
            if roll < 0.2:
                wire = wire[: rng.randint(1, len(wire))]
            elif roll < 0.4:
                wire[rng.randrange(len(wire))] ^= rng.randint(1, 255)
            elif roll < 0.5:
                wire = bytearray(rng.randbytes(rng.randint(0, 200)))
            parts.append(bytes(wire))
        lines.append("dec " + b"".join(parts).hex())
    return lines


def _cpython_answers(lines: list[str]) -> list[str]:
    dec = frames.Decoder()
    out = []
    for line in lines:
        parts = line.split()
        op = parts[0]
        if op == "crc":
            data = bytes.fromhex(parts[1]) if len(parts) > 1 else b""
            out.append(f"{crc.crc16_modbus(data)} {crc.crc16_ccitt(data)}")
        elif op == "enc":
            payload = bytes.fromhex(parts[4]) if len(parts) > 4 else b""
            out.append(frames.encode(int(parts[1]), int(parts[2]), int(parts[3]), payload).hex())
        else:
            data = bytes.fromhex(parts[1]) if len(parts) > 1 else b""
            res = [
                "R:" + r if isinstance(r, str) else f"F:{r.kind}:{r.seq}:{r.device_id}:{r.payload.hex()}"
                for r in dec.feed(data)
            ]
            out.append(" ".join(res) if res else "-")
    return out


def test_micropython_and_cpython_agree(tmp_path: Path) -> None:
    exe = micropython_binary()
    if exe is None:
        pytest.skip("micropython unix port not installed")
    lines = _vectors(random.Random(20261126))
    vec = tmp_path / "vectors.txt"
    vec.write_text("\n".join(lines) + "\n")
    script = Path(__file__).parent / "micropython" / "codec_vectors.py"
    proc = subprocess.run(
        [exe, str(script), str(vec)],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, MICROPYPATH=str(CODEC_DIR)),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    mp = proc.stdout.splitlines()
    cp = _cpython_answers(lines)
    assert len(mp) == len(cp) == len(lines)
    mismatches = [(i, lines[i][:60], a, b) for i, (a, b) in enumerate(zip(mp, cp, strict=True)) if a != b]
    assert mismatches == []
    # the vectors exercised every branch: good frames and several rejection reasons
    joined = " ".join(cp)
    reasons = {w for w in joined.split() if w.startswith("R:")}
    assert "F:" in joined
    assert "R:bad_crc" in reasons
    assert len(reasons) >= 3


def test_micropython_refuses_python_only_syntax_in_codec() -> None:
    """The codec must compile on MicroPython; a syntax it lacks would fail this import."""
    exe = micropython_binary()
    if exe is None:
        pytest.skip("micropython unix port not installed")
    proc = subprocess.run(
        [exe, "-c", "import crc, frames; print(frames.MAX_WIRE)"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=dict(os.environ, MICROPYPATH=str(CODEC_DIR)),
    )
    assert proc.stdout.strip() == str(frames.MAX_WIRE), proc.stderr
