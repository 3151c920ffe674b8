"""The README's benchmark tables, regenerated from the benchmarks' JSON files.

Every benchmark (``just bench``, ``just bench-peers``, ``just fleet``, ``twin bench``,
``python -m devtools.bench_serial``, ``python -m hardware.footprint``) ends with
``twin.bench_record.record``: one file ``bench-results/<name>.json`` (git-ignored) holding the
command that produced it, when, on what machine, and its table rows (the format and the writer
live there, in the wheel, so ``twin bench`` records without devtools). Owns: reading those files
back and ``python -m devtools.bench_results``, which rewrites the README's "Benchmarks" tables
between the markers from whatever files are there, so the README states only what a run printed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import msgspec

from twin.bench_record import RESULTS, Result

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BEGIN = "<!-- bench-results:begin (python -m devtools.bench_results writes this part) -->"
END = "<!-- bench-results:end -->"

# The README's order; files with other names follow, alphabetically.
ORDER = ("bench", "bench-latency", "bench-peers", "bench-serial", "fleet", "twin-bench", "twin-scale", "footprint")


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
