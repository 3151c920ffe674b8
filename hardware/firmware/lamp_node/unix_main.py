"""Unix-port entry point: ``micropython unix_main.py UNIT [UART_PATH]``; UART is stdin/stdout
unless a raw tty path is given. Run with MICROPYPATH=<this dir>:<edge_agent/codec>."""

import sys

import app
from board_unix import UnixBoard

_unit = int(sys.argv[1]) if len(sys.argv) > 1 else 1
_path = sys.argv[2] if len(sys.argv) > 2 else None
sys.stderr.write("lamp node unit=%d ready\n" % _unit)
app.run(UnixBoard(_path), _unit)
