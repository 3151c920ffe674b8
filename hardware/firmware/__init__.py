"""MicroPython firmware sources (also importable under CPython for in-process emulation)."""
