"""Copy a firmware and its config onto an RP2040 board running MicroPython (mpremote).

Usage: ``python -m hardware.flash --port /dev/ttyACM0 [--firmware lamp_node|dongle]
[--config node.json] [--mpy] [--dry-run]`` (``just flash --port ...``). Copies the files of the
firmware's manifest (the shared codec and store included) to the board's root, the config as
``node.json`` (lamp node), then resets the board so main.py starts. ``--mpy`` copies bytecode
compiled by mpy-cross instead of sources (less RAM at import). The board must already run
MicroPython (drag the RP2040 .uf2 from micropython.org onto it in BOOTSEL mode first).
Must not import: edge_agent (paths only).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from hardware.footprint.__main__ import FIRMWARES


def _tool(name: str) -> str:
    return shutil.which(name) or str(Path(sys.executable).with_name(name))


def commands(port: str, firmware: str, config: Path | None, mpy_dir: Path | None) -> list[list[str]]:
    files = FIRMWARES[firmware]
    srcs: list[str] = []
    for f in files:
        if mpy_dir is not None and f.name != "main.py":
            srcs.append(str(mpy_dir / (f.stem + ".mpy")))
        else:
            srcs.append(str(f))
    mp = [_tool("mpremote"), "connect", port]
    cmds = [[*mp, "cp", *srcs, ":"]]
    if config is not None:
        cmds.append([*mp, "cp", str(config), ":node.json"])
    cmds.append([*mp, "reset"])
    return cmds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hardware.flash", description=__doc__.splitlines()[0])
    ap.add_argument("--port", required=True, help="the board's USB serial port, e.g. /dev/ttyACM0")
    ap.add_argument("--firmware", choices=sorted(FIRMWARES), default="lamp_node")
    ap.add_argument("--config", type=Path, default=None, help="node.json for a lamp node (hardware/README.md)")
    ap.add_argument("--mpy", action="store_true", help="copy mpy-cross bytecode instead of sources")
    ap.add_argument("--dry-run", action="store_true", help="print the mpremote commands only")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="flash-") as tmp:
        mpy_dir = None
        if args.mpy:
            mpy_dir = Path(tmp)
            for f in FIRMWARES[args.firmware]:
                if f.name != "main.py":
                    out = mpy_dir / (f.stem + ".mpy")
                    subprocess.run([_tool("mpy-cross"), "-march=armv6m", "-o", str(out), str(f)], check=True)
        for cmd in commands(args.port, args.firmware, args.config, mpy_dir):
            print(" ".join(cmd))
            if not args.dry_run:
                subprocess.run(cmd, check=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
