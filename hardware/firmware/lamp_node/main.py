"""Device entry point (RP2040). Unit address, location and default program come from the
stored state, else node.json (copied by `just flash`), else unit 1 (see hardware/README.md)."""

import app
from board_rp2 import Rp2Board

app.run(Rp2Board(), 1, gap_ms=5)
