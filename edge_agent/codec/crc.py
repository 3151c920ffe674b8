"""CRC-16 checksums: Modbus RTU (poly 0xA001 reflected, init 0xFFFF) and the dongle frame CRC
(CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection).

Owns: the two checksum functions and their lookup tables (built once at import, 512 bytes each
as ``array('H')``; no allocation per call). Runs unchanged under CPython and MicroPython.
Must not import: anything of ours.
"""

from array import array

try:
    from micropython import const  # type: ignore[import-not-found, attr-defined, unused-ignore]
except ImportError:  # CPython

    def const(value: int) -> int:  # type: ignore[misc, unused-ignore]
        return value


_MODBUS_POLY = const(0xA001)
_CCITT_POLY = const(0x1021)


def _modbus_table() -> array:  # type: ignore[type-arg, unused-ignore]
    table = array("H", [0] * 256)
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ _MODBUS_POLY if crc & 1 else crc >> 1
        table[i] = crc
    return table


def _ccitt_table() -> array:  # type: ignore[type-arg, unused-ignore]
    table = array("H", [0] * 256)
    for i in range(256):
        crc = i << 8
        for _ in range(8):
            crc = ((crc << 1) ^ _CCITT_POLY) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
        table[i] = crc
    return table


_MODBUS_TABLE = _modbus_table()
_CCITT_TABLE = _ccitt_table()


def crc16_modbus(data: bytes | bytearray | memoryview, start: int = 0, end: int = -1) -> int:
    """Modbus RTU CRC of ``data[start:end]`` (``end=-1`` means to the end). On the wire the
    result is sent low byte first."""
    if end < 0:
        end = len(data)
    crc = 0xFFFF
    table = _MODBUS_TABLE
    for i in range(start, end):
        crc = (crc >> 8) ^ table[(crc ^ data[i]) & 0xFF]
    return crc


def crc16_ccitt(data: bytes | bytearray | memoryview, start: int = 0, end: int = -1) -> int:
    """CRC-16/CCITT-FALSE of ``data[start:end]``; check value for b"123456789" is 0x29B1.
    On the wire the result is sent high byte first."""
    if end < 0:
        end = len(data)
    crc = 0xFFFF
    table = _CCITT_TABLE
    for i in range(start, end):
        crc = ((crc << 8) & 0xFFFF) ^ table[((crc >> 8) ^ data[i]) & 0xFF]
    return crc
