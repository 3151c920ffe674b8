"""One benchmark's figures as a JSON file: ``bench-results/<name>.json``.

Owns: the result format (``Row``, ``Result``), what a figure depends on (``machine``) and the
writer (``record``). Every benchmark ends with ``record`` (``twin bench``, and from a checkout
``just bench``, ``just bench-peers``, ``just fleet``, ``python -m devtools.bench_serial``,
``python -m hardware.footprint``); ``devtools.bench_results`` reads the files back and rewrites
the README's tables. It lives in the wheel, below the tools, so ``twin bench`` can record from an
installed wheel too.

Where the files go (``RESULTS``): ``bench-results/`` beside the checkout's root when this file
is in a checkout (a ``pyproject.toml`` next to the ``twin`` package: a source tree or an
editable install); from an installed wheel, ``./bench-results`` under the current directory.
``record(results=...)`` writes elsewhere.

Must not import: devtools, hardware, numpy, numba (a result file needs msgspec only).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

_CHECKOUT = Path(__file__).resolve().parent.parent
RESULTS = _CHECKOUT / "bench-results" if (_CHECKOUT / "pyproject.toml").is_file() else Path("bench-results")


class Row(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One figure: as text (what a reader sees), the aim, whether it was met; ``value`` for tools."""

    what: str
    figure: str
    aim: str = ""
    met: bool | None = None  # None: no aim, or not comparable
    value: float | None = None
    unit: str = ""


class Result(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One benchmark run: the command, when, on what machine, and its rows (or a wide table)."""

    name: str
    title: str
    command: str
    measured_at: str
    machine: dict[str, Any]
    rows: list[Row]
    notes: str = ""
    columns: list[str] = []  # a wide table instead of what/figure/aim: each row's ``cells``
    cells: list[list[str]] = []
    extra: dict[str, Any] = {}
    provenance: str = ""  # empty: measured by ``command``; else e.g. "transcribed from the README of ..."


def machine() -> dict[str, Any]:
    """What the figures depend on: cores, load at the end of the run, Python, platform."""
    try:
        load = [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        load = []
    return {"cpus": os.cpu_count(), "loadavg": load, "python": sys.version.split()[0], "platform": sys.platform}


def record(
    name: str,
    *,
    title: str,
    command: str,
    rows: list[Row],
    notes: str = "",
    columns: list[str] | None = None,
    cells: list[list[str]] | None = None,
    extra: dict[str, Any] | None = None,
    results: Path = RESULTS,
) -> Path:
    """Write ``bench-results/<name>.json`` and return its path."""
    doc = Result(
        name=name,
        title=title,
        command=command,
        measured_at=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        machine=machine(),
        rows=rows,
        notes=notes,
        columns=columns or [],
        cells=cells or [],
        extra=extra or {},
    )
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"{name}.json"
    path.write_text(msgspec.json.format(msgspec.json.encode(doc), indent=1).decode() + "\n")
    return path
