"""Byte-level codecs shared by the gateway agent and the MicroPython firmware.

Owns: the Modbus CRC-16 and the frame CRC (``crc``), the wearable dongle frame codec
(``frames``), and the lamp node register map (``registers``, CPython only: the firmware keeps a
``const()`` copy of it). ``crc`` and ``frames`` are written in the common subset of CPython and
MicroPython (no dataclasses, no typing imports at run time, no f-string tricks) and are copied
verbatim onto the device, where they are imported as top-level modules (``import crc``,
``import frames``).

Must not import: anything of ours but its sibling modules (so no ``edge_agent.errors``:
decoders report a short reason string that callers turn into ``ProtocolError``).
This ``__init__`` stays empty of imports so the firmware never pulls it in.
"""
