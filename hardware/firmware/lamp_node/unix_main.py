"""Unix-port entry point: ``micropython unix_main.py [--state DIR] [--ctl PATH] [--rtc]
UNIT [UART_PATH]``; UART is stdin/stdout unless a raw tty path is given; the state directory
stands for the node's flash (default: the current directory). Run with
MICROPYPATH=<this dir>:<firmware/common>:<edge_agent/codec>."""

import sys

import app
from board_unix import UnixBoard

_args = sys.argv[1:]
_state = "."
_ctl = None
_rtc = False
while _args and _args[0].startswith("--"):
    _opt = _args.pop(0)
    if _opt == "--state":
        _state = _args.pop(0)
    elif _opt == "--ctl":
        _ctl = _args.pop(0)
    elif _opt == "--rtc":
        _rtc = True
_unit = int(_args[0]) if _args else 1
_path = _args[1] if len(_args) > 1 else None
_board = UnixBoard(_path, _state, _ctl, _rtc)
sys.stderr.write("lamp node unit=%d ready cause=%d\n" % (_unit, _board.reset_cause()))
_lamp = app.run(_board, _unit)
