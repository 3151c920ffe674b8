"""Lamp node main loop: bytes from the board's UART into the RTU slave, replies back out, and
the lamp's clock ticked from the board's millisecond ticks. The board is injected.

Must not import: machine, board modules (main.py / unix_main.py choose the board).
"""

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fwtypes import Board

try:
    from hardware.firmware.lamp_node.lamp import Lamp  # type: ignore[import-not-found, unused-ignore]
    from hardware.firmware.lamp_node.rtu import RtuSlave  # type: ignore[import-not-found, unused-ignore]
except ImportError:  # MicroPython
    from lamp import Lamp  # type: ignore[import-not-found, no-redef, unused-ignore]
    from rtu import RtuSlave  # type: ignore[import-not-found, no-redef, unused-ignore]


def run(board: "Board", unit: int, gap_ms: int = 20, tick_ms: int = 10) -> None:
    """Serve until the board reports end of input (``board.closed``)."""
    b = board
    lamp = Lamp(b.pwm)
    slave = RtuSlave(unit, lamp)
    last_tick = b.ticks_ms()
    last_rx = last_tick
    while not b.closed:
        if b.wait_rx(tick_ms):
            now = b.ticks_ms()
            lamp.tick(b.ticks_diff(now, last_tick))
            last_tick = now
            while True:
                c = b.read_byte()
                if c < 0:
                    break
                n = slave.feed(c)
                if n:
                    b.write(slave.tx, n)
            last_rx = b.ticks_ms()
        now = b.ticks_ms()
        if slave.pending() and b.ticks_diff(now, last_rx) > gap_ms:
            slave.reset()
        d = b.ticks_diff(now, last_tick)
        if d >= tick_ms:
            lamp.tick(d)
            last_tick = now
