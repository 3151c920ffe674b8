"""Benchmark figures as JSON, and the README's figures tables regenerated from them.

Every benchmark (``just bench``, ``just bench-peers``, ``just fleet``, ``twin bench``,
``python -m devtools.bench_serial``, ``python -m hardware.footprint``) ends with ``record``:
one file ``bench-results/<name>.json`` (git-ignored) holding the command that produced it,
when, on what machine, and its table rows. ``python -m devtools.bench_results`` rewrites the
README's "Benchmarks" tables between the markers from whatever files are there, so the README
states only what a run printed. Rows carry the figure as text (what a reader sees), the aim,
and whether it was met; ``value`` keeps the number for tools.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench-results"
README = ROOT / "README.md"
BEGIN = "<!-- bench-results:begin (python -m devtools.bench_results writes this part) -->"
END = "<!-- bench-results:end -->"

# The README's order; files with other names follow, alphabetically.
ORDER = ("bench", "bench-latency", "bench-peers", "bench-serial", "fleet", "twin-bench", "twin-scale", "footprint")


class Row(msgspec.Struct, kw_only=True, omit_defaults=True):
    what: str
    figure: str
    aim: str = ""
    met: bool | None = None  # None: no aim, or not comparable
    value: float | None = None
    unit: str = ""


class Result(msgspec.Struct, kw_only=True, omit_defaults=True):
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


def load(results: Path = RESULTS) -> list[Result]:
    found = {p.stem: msgspec.json.decode(p.read_bytes(), type=Result) for p in sorted(results.glob("*.json"))}
    ordered = [found.pop(name) for name in ORDER if name in found]
    return ordered + [found[name] for name in sorted(found)]


def _mark(met: bool | None) -> str:
    return {True: "met", False: "**missed**", None: ""}[met]


def render(result: Result) -> str:
    m = result.machine
    load = "/".join(f"{x:.1f}" for x in m.get("loadavg", []))
    lines = [
        f"**{result.title}**: `{result.command}` ({result.measured_at}, {m.get('cpus')} cores, "
        f"load {load or 'n/a'}, Python {m.get('python')})",
        "",
    ]
    if result.columns:
        lines.append("| " + " | ".join(result.columns) + " |")
        lines.append("|" + "---|" * len(result.columns))
        lines += ["| " + " | ".join(row) + " |" for row in result.cells]
        lines.append("")
    if result.rows:
        lines += ["| what | figure | aim | |", "|---|---|---|---|"]
        lines += [f"| {r.what} | {r.figure} | {r.aim} | {_mark(r.met)} |" for r in result.rows]
        lines.append("")
    if result.notes:
        lines += [result.notes, ""]
    return "\n".join(lines)


def regenerate(readme: Path = README, results: Path = RESULTS) -> bool:
    """Rewrite the README between the markers; True when it changed."""
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{readme}: the markers {BEGIN!r} ... {END!r} are missing")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    body = "\n".join(render(r) for r in load(results))
    new = f"{head}{BEGIN}\n\n{body}\n{END}{tail}"
    if new == text:
        return False
    readme.write_text(new)
    return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.bench_results",
        description="Rewrite the README's benchmark tables from bench-results/*.json.",
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of <name>.json (bench-results/)")
    parser.add_argument("--readme", type=Path, default=README, help="the README to rewrite")
    parser.add_argument("--print", action="store_true", help="print the tables instead of writing the README")
    args = parser.parse_args(argv)
    results = load(args.results)
    if not results:
        raise SystemExit(f"no figures in {args.results}: run a benchmark first (just bench, just fleet, ...)")
    if args.print:
        print("\n".join(render(r) for r in results))
        return
    changed = regenerate(args.readme, args.results)
    print(f"{args.readme}: {'rewritten from' if changed else 'already matches'} {len(results)} result files")


if __name__ == "__main__":
    main()
