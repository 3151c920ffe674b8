"""Simulated radio packets: one text line per packet from a wearable, turned into a frame kind,
device id and payload (payload layouts: hardware/FRAMES.md).

Lines: ``sos DEV BATT`` | ``fall DEV SEVERITY BATT`` | ``vitals DEV HR SPO2 TEMP_DECI_C`` |
``hb DEV BATT RSSI``. Must not import: board modules.
"""

try:
    from edge_agent.codec import frames  # type: ignore[import-not-found, unused-ignore]
except ImportError:  # MicroPython
    import frames  # type: ignore[import-not-found, no-redef, unused-ignore]


def parse_line(line: bytes) -> "tuple[int, int, bytes] | None":
    """(kind, device_id, payload) or None for a line that is not a packet."""
    parts = line.split()
    if len(parts) < 2:
        return None
    try:
        word = parts[0]
        dev = int(parts[1])
        nums = [int(p) for p in parts[2:]]
        if word == b"sos" and len(nums) == 1:
            return frames.SOS, dev, bytes([nums[0] & 0xFF])
        if word == b"fall" and len(nums) == 2:
            return frames.FALL, dev, bytes([nums[0] & 0xFF, nums[1] & 0xFF])
        if word == b"vitals" and len(nums) == 3:
            t = nums[2] & 0xFFFF
            return frames.VITALS, dev, bytes([nums[0] & 0xFF, nums[1] & 0xFF, t >> 8, t & 0xFF])
        if word == b"hb" and len(nums) == 2:
            return frames.HEARTBEAT, dev, bytes([nums[0] & 0xFF, nums[1] & 0xFF])
    except ValueError:
        return None
    return None
