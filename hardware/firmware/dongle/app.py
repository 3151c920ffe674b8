"""Dongle main loop: radio packets in, frames out to the gateway, ACKs back in, and the
watchdog fed once per healthy loop (only there: a loop that stops coming round reboots the
dongle, which then says HELLO with a new nonce). Unacknowledged alarms (SOS, FALL) are kept on
flash (``queue`` record, common/store.py) and sent again after a reboot (sender.py,
hardware/FRAMES.md). The board is injected. Must not import: machine, board modules."""

try:
    from hardware.firmware.dongle.radio import parse_line  # type: ignore[import-not-found, unused-ignore]
    from hardware.firmware.dongle.sender import Sender  # type: ignore[import-not-found, unused-ignore]
    from hardware.firmware.common.store import Store  # type: ignore[import-not-found, unused-ignore]
except ImportError:  # MicroPython
    from radio import parse_line  # type: ignore[import-not-found, no-redef, unused-ignore]
    from sender import Sender  # type: ignore[import-not-found, no-redef, unused-ignore]
    from store import Store  # type: ignore[import-not-found, no-redef, unused-ignore]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fwtypes import DongleBoard

WDT_MS = 2000  # watchdog timeout (the RP2040 allows up to 8388 ms)


def run(board: "DongleBoard", ack_timeout_ms: int = 50, nonce: int = 0, persist: bool = True) -> Sender:
    """Serve until the host link closes; returns the sender (for its counters). ``persist``:
    keep unACKed alarms on the board's flash (False: RAM only, e.g. a board without a filesystem)."""
    store = Store(board.path("queue"), board.cut_point) if persist else None
    sender = Sender(board, ack_timeout_ms, nonce, store)
    board.wdt_start(WDT_MS)
    while not board.closed:
        board.wdt_feed()  # only here: a hung loop reboots the dongle
        board.wait(5)
        while True:
            c = board.read_byte()
            if c < 0:
                break
            sender.on_byte(c)
        line = board.read_radio_line()
        while line is not None:
            if line.strip() == b"stats":
                board.log("stats sent=%d retransmits=%d acked=%d dropped=%d resent=%d saves=%d"
                          " idle=%d rejected=%r" % (sender.sent, sender.retransmits, sender.acked,
                                                    sender.dropped, sender.resent, sender.saves,
                                                    sender.idle(), sender.decoder.rejected))
            else:
                pkt = parse_line(line)
                if pkt is not None:
                    sender.push(pkt[0], pkt[1], pkt[2])
            line = board.read_radio_line()
        sender.poll(board.ticks_ms())
    return sender
