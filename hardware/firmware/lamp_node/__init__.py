"""Lamp node firmware: a Modbus RTU slave serving hardware/REGISTERS.md."""
