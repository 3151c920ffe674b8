"""The chaos table as a JSON file: ``bench-results/chaos.json``, and the README's table from it.

Owns: the format (``Record``: one table row with where it came from; ``Records``: the file),
``record`` (a finished ``scenario.Row`` with its letter, the command, the date, the machine's
load and the variant), ``merge`` (per letter, the newer rows win: a run of ``--only i`` keeps
the other rows of the file, and new letters, such as power-cut rows, just appear), ``write``,
``read`` and ``markdown`` (the README's chaos table, which ``devtools.bench_results`` places
between its markers). Rows are ordered by letter; the rows of one letter keep their run order.

Must not import: devtools.bench_results (it reads this).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import msgspec

from devtools.chaos.scenario import Row
from twin.bench_record import RESULTS, machine

NAME = "chaos"
PATH = RESULTS / f"{NAME}.json"


class Record(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One row of the chaos table, and the run it comes from."""

    letter: str
    fault: str
    injections: int
    sent: int
    delivered: int
    lost: int
    duplicates: int
    ok: bool
    drain_s: float | None = None
    first_alert_s: float | None = None
    checks: list[str] = []  # what the row saw (the notes), passed or not
    failures: list[str] = []
    settings: list[str] = []  # departures from the shipped layout
    variant: str  # "full" or "quick"
    command: str
    measured_at: str  # "%Y-%m-%d %H:%M UTC" (a transcribed row: the date it gives)
    machine: dict[str, Any] = {}
    provenance: str = ""  # empty: measured by `command`; else e.g. "transcribed from the README of ..."


class Records(msgspec.Struct, kw_only=True):
    name: str = NAME
    rows: list[Record] = []


def record(letter: str, row: Row, *, variant: str, command: str) -> Record:
    """``row`` as finished just now on this machine."""
    return Record(
        letter=letter,
        fault=row.fault,
        injections=row.injections,
        sent=row.sent,
        delivered=row.delivered,
        lost=row.lost,
        duplicates=row.duplicates,
        ok=row.ok,
        drain_s=row.drain_s,
        first_alert_s=row.first_alert_s,
        checks=list(row.notes),
        failures=list(row.failures),
        settings=list(row.settings),
        variant=variant,
        command=command,
        measured_at=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        machine=machine(),
    )


def merge(old: list[Record], new: list[Record]) -> list[Record]:
    """Per letter, the rows of whichever side measured it later (``new`` on a tie)."""
    merged: list[Record] = []
    for letter in sorted({r.letter for r in (*old, *new)}):
        before = [r for r in old if r.letter == letter]
        after = [r for r in new if r.letter == letter]
        newer = bool(after) and (not before or _last(after) >= _last(before))
        merged += after if newer else before
    return merged


def _last(rows: list[Record]) -> str:
    return max(r.measured_at for r in rows)


def read(path: Path = PATH) -> list[Record]:
    """The rows of ``path``; none when it does not exist. A malformed file is an error naming it."""
    if not path.is_file():
        return []
    try:
        return msgspec.json.decode(path.read_bytes(), type=Records).rows
    except msgspec.DecodeError as exc:
        raise SystemExit(f"{path}: not a chaos result file: {exc}") from exc


def write(rows: list[Record], path: Path = PATH) -> Path:
    """Merge ``rows`` into ``path`` (created if missing) and return it."""
    merged = merge(read(path), rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = msgspec.json.format(msgspec.json.encode(Records(rows=merged)), indent=1)
    path.write_text(doc.decode() + "\n")
    return path


COLUMNS = (
    "row",
    "fault",
    "injections",
    "sent",
    "delivered",
    "lost",
    "duplicates (dropped)",
    "time to drain",
    "first alert after reconnect",
    "checks",
    "special settings",
    "result",
    "run",
)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _run(r: Record) -> str:
    return f"{r.variant}, {r.measured_at}" + (" (transcribed)" if r.provenance else "")


def _load(r: Record) -> str:
    load = r.machine.get("loadavg")
    return "/".join(f"{float(x):.1f}" for x in load) if isinstance(load, list) and load else "n/a"


def markdown(rows: list[Record]) -> str:
    """The README's chaos table, then which command (when, at what load) produced which rows."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        cells = [
            r.letter,
            r.fault,
            f"{r.injections:,}",
            f"{r.sent:,}",
            f"{r.delivered:,}",
            f"**{r.lost:,}**" if r.lost else "0",
            f"{r.duplicates:,}",
            "-" if r.drain_s is None else f"{r.drain_s:.1f} s",
            "-" if r.first_alert_s is None else f"{r.first_alert_s:.2f} s",
            "; ".join([*(f"**FAIL** {f}" for f in r.failures), *r.checks]) or "-",
            "; ".join(r.settings) or "none",
            "pass" if r.ok else "**FAIL**",
            _run(r),
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    runs: dict[tuple[str, str, str, str], list[str]] = {}
    for r in rows:
        runs.setdefault((r.command, r.measured_at, _load(r), r.provenance), []).append(r.letter)
    lines.append("")
    for (command, at, load, provenance), letters in runs.items():
        named = ", ".join(dict.fromkeys(letters))
        source = f"; {provenance}" if provenance else ""
        lines.append(f"- row{'s' if len(set(letters)) > 1 else ''} {named}: `{command}` ({at}, load {load}{source})")
    return "\n".join(lines) + "\n"
