"""Unix-port entry point: ``micropython unix_main.py [--state DIR] RADIO_PATH [ACK_TIMEOUT_MS]``.
Host link on stdin/stdout; radio packet lines from RADIO_PATH (e.g. /dev/fd/3); the state
directory stands for the dongle's flash (default: the current directory)."""

import os
import sys

import app
from board_unix import UnixDongleBoard

_args = sys.argv[1:]
_state = "."
if _args and _args[0] == "--state":
    _state = _args[1]
    _args = _args[2:]
_radio = _args[0] if _args else None
_timeout = int(_args[1]) if len(_args) > 1 else 50
_n = os.urandom(4)
sys.stderr.write("dongle ready\n")
_board = UnixDongleBoard(_radio, _state)
_sender = app.run(_board, _timeout, (_n[0] << 24) | (_n[1] << 16) | (_n[2] << 8) | _n[3])
_board.log("exit sent=%d retransmits=%d acked=%d" % (_sender.sent, _sender.retransmits,
                                                     _sender.acked))
