"""``python -m devtools.powercut mount DISK MOUNT --control DIR``: the file system's process.

Owns: the command line only (``PowerCutFS`` starts it; by hand it serves until
``fusermount3 -u MOUNT``, then syncs everything to DISK). Must not import: edge_agent, twin.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from devtools.powercut.ops import serve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devtools.powercut")
    sub = parser.add_subparsers(dest="command", required=True)
    mount = sub.add_parser("mount", help="serve DISK at MOUNT until unmounted")
    mount.add_argument("disk", type=Path, help="the backing directory: the durable state")
    mount.add_argument("mount", type=Path, help="the mountpoint")
    mount.add_argument("--control", type=Path, help="where cut orders and stats live (default: a temp dir)")
    args = parser.parse_args(argv)
    for name in ("disk", "mount"):
        if not getattr(args, name).is_dir():
            parser.error(f"{name} {getattr(args, name)} is not a directory")
    serve(args.disk, args.mount, args.control or Path(tempfile.mkdtemp(prefix="powercut-")))


if __name__ == "__main__":
    main()
