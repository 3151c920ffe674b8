"""Type-check the MicroPython firmware against the MicroPython stubs (run by ``just lint``).

Owns: assembling a mypy run per firmware that sees MicroPython, not CPython: the
micropython-stdlib-stubs ``stdlib`` tree as a custom typeshed, the micropython-rp2-stubs files
(``machine``, ``micropython``, ``time`` with ticks_ms ...) on MYPYPATH, no site-packages, and the
firmware's own module path (its folder, the shared codec, ``fwtypes.pyi`` with the board
interfaces). Exits non-zero when mypy reports errors.
Must not import: edge_agent, the firmware itself.

Usage: ``python -m hardware.typecheck [-v]``
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIRMWARE = ROOT / "hardware" / "firmware"
CODEC = ROOT / "edge_agent" / "codec"
TARGETS = {
    "lamp_node": [
        "regs.py", "sun.py", "simsensor.py", "lamp.py", "rtu.py", "app.py",
        "board_unix.py", "board_rp2.py", "main.py", "unix_main.py",
    ],
    "dongle": ["radio.py", "sender.py", "app.py", "board_unix.py", "board_rp2.py", "main.py", "unix_main.py"],
}
CODEC_FILES = ["crc.py", "frames.py"]
COMMON = FIRMWARE / "common"
COMMON_FILES = ["store.py", "watchdog.py"]


def _dist_files(name: str) -> list[Path]:
    dist = importlib.metadata.distribution(name)
    return [Path(str(dist.locate_file(f))) for f in dist.files or []]


def stub_locations(workdir: Path) -> tuple[Path, Path]:
    """(custom typeshed dir, board stub dir) built from the installed stub distributions."""
    try:
        std = _dist_files("micropython-stdlib-stubs")
        board = importlib.metadata.distribution("micropython-rp2-stubs")
    except importlib.metadata.PackageNotFoundError as exc:
        raise SystemExit(f"typecheck: missing stub package {exc} (install the dev extra)") from None
    versions = next(p for p in std if p.name == "VERSIONS" and p.parent.name == "stdlib")
    typeshed = versions.parent.parent
    # The board stubs install as top-level .pyi files in site-packages; mypy only reads such
    # files from MYPYPATH, so copy them (only them, not CPython packages) to a folder of their own.
    board_dir = workdir / "rp2-stubs"
    for rel in board.files or []:
        src = Path(str(board.locate_file(rel)))
        if src.suffix != ".pyi" or ".dist-info" in str(rel):
            continue
        dst = board_dir / str(rel)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    return typeshed, board_dir


def check(name: str, files: list[str], typeshed: Path, board_dir: Path, work: Path, verbose: bool) -> int:
    # Put the firmware and the codec side by side, as on the device's filesystem.
    tree = work / name
    tree.mkdir()
    for f in files:
        shutil.copyfile(FIRMWARE / name / f, tree / f)
    for f in CODEC_FILES:
        shutil.copyfile(CODEC / f, tree / f)
    for f in COMMON_FILES:
        shutil.copyfile(COMMON / f, tree / f)
    shutil.copyfile(FIRMWARE / "fwtypes.pyi", tree / "fwtypes.pyi")
    # Strict on our files; the third-party board stubs are read but not judged.
    stub_modules = sorted({p.name.split(".")[0] for p in board_dir.iterdir()})
    config = tree / "mypy.ini"
    config.write_text(
        "[mypy]\nstrict = True\nwarn_unused_ignores = True\npython_version = 3.11\n"
        "no_site_packages = True\n" + "".join(f"[mypy-{m},{m}.*]\nignore_errors = True\n" for m in stub_modules)
    )
    cmd = [
        sys.executable,
        "-m",
        "mypy",
        "--config-file",
        str(config),
        "--custom-typeshed-dir",
        str(typeshed),
        "--no-incremental",
        "--cache-dir",
        os.devnull,
        *[str(tree / f) for f in [*files, *CODEC_FILES, *COMMON_FILES]],
    ]
    env = dict(os.environ, MYPYPATH=f"{board_dir}{os.pathsep}{tree}")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, cwd=tree)
    out = (proc.stdout + proc.stderr).replace(str(tree) + os.sep, f"hardware/firmware/{name}/")
    if proc.returncode != 0 or verbose:
        print(f"--- firmware {name}:\n{out}", end="")
    else:
        print(f"firmware {name}: {out.strip().splitlines()[-1]}")
    return proc.returncode


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    verbose = "-v" in args
    with tempfile.TemporaryDirectory(prefix="fwtypecheck-") as tmp:
        work = Path(tmp)
        typeshed, board_dir = stub_locations(work)
        rc = 0
        for name, files in TARGETS.items():
            rc |= check(name, files, typeshed, board_dir, work, verbose)
    return 1 if rc else 0


if __name__ == "__main__":
    raise SystemExit(main())
