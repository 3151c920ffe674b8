"""Firmware modules shared by the lamp node and the dongle (flat files on the device)."""
