# ruff: noqa: UP031  (%-formatting: this file runs under MicroPython)
# Run by tests/test_codec.py under the MicroPython unix port (MICROPYPATH=edge_agent/codec).
# Reads vector lines from the file named in argv[1] and prints one answer line per vector:
#   crc HEX               -> "MODBUS CCITT"
#   enc KIND SEQ DEV HEX  -> wire bytes as hex
#   dec HEX               -> space-separated results: F:kind:seq:dev:payloadhex or R:reason
import sys

import crc
import frames

dec = frames.Decoder()
with open(sys.argv[1]) as f:
    for line in f:
        parts = line.split()
        if not parts:
            continue
        op = parts[0]
        if op == "crc":
            data = bytes.fromhex(parts[1]) if len(parts) > 1 else b""
            print("%d %d" % (crc.crc16_modbus(data), crc.crc16_ccitt(data)))
        elif op == "enc":
            payload = bytes.fromhex(parts[4]) if len(parts) > 4 else b""
            print(frames.encode(int(parts[1]), int(parts[2]), int(parts[3]), payload).hex())
        elif op == "dec":
            data = bytes.fromhex(parts[1]) if len(parts) > 1 else b""
            out = []
            for r in dec.feed(data):
                if isinstance(r, str):
                    out.append("R:" + r)
                else:
                    out.append("F:%d:%d:%d:%s" % (r.kind, r.seq, r.device_id, r.payload.hex()))
            print(" ".join(out) if out else "-")
