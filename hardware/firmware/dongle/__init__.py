"""Wearable dongle firmware: radio packets to frames, retransmitted until ACKed."""
