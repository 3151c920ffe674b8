"""Device entry point (RP2040): unit address from unit.txt (default 1)."""

import app
from board_rp2 import Rp2Board


def _unit() -> int:
    try:
        with open("unit.txt") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return 1


app.run(Rp2Board(), _unit(), gap_ms=5)
