"""Hardware side of the project: the contracts (register map, frame spec), the MicroPython
firmware for lamp nodes and wearable dongles, and the hardware-in-the-loop harness.

Owns: ``registers`` (the Modbus register map shared by agent code and tests), ``firmware/``
(MicroPython sources, also importable under CPython for in-process emulation), ``hil/``
(pty buses and process runners), ``typecheck`` (mypy against the MicroPython stubs).
Must not import: edge_agent.engine, edge_agent.policy, edge_agent.agent.
"""
