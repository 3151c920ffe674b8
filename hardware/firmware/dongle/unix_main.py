"""Unix-port entry point: ``micropython unix_main.py RADIO_PATH [ACK_TIMEOUT_MS]``.
Host link on stdin/stdout; radio packet lines from RADIO_PATH (e.g. /dev/fd/3)."""

import os
import sys

import app
from board_unix import UnixDongleBoard

_radio = sys.argv[1] if len(sys.argv) > 1 else None
_timeout = int(sys.argv[2]) if len(sys.argv) > 2 else 50
_n = os.urandom(4)
sys.stderr.write("dongle ready\n")
_board = UnixDongleBoard(_radio)
_sender = app.run(_board, _timeout, (_n[0] << 24) | (_n[1] << 16) | (_n[2] << 8) | _n[3])
_board.log("exit sent=%d retransmits=%d acked=%d" % (_sender.sent, _sender.retransmits,
                                                     _sender.acked))
