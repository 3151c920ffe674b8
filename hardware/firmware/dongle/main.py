"""Device entry point (RP2040 dongle)."""

import os

import app
from board_rp2 import Rp2DongleBoard

_n = os.urandom(4)
app.run(Rp2DongleBoard(), 50, (_n[0] << 24) | (_n[1] << 16) | (_n[2] << 8) | _n[3])
