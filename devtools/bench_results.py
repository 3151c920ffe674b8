"""The README's benchmark and chaos tables, regenerated from committed JSON files.

Every benchmark (``just bench``, ``just bench-peers``, ``just fleet``, ``just bench-centre``, ``twin bench``,
``python -m devtools.bench_serial``, ``python -m hardware.footprint``) ends with
``twin.bench_record.record``: one file ``bench-results/<name>.json`` (git-ignored) holding the
command that produced it, when, on what machine, and its table rows (the format and the writer
live there, in the wheel, so ``twin bench`` records without devtools); ``just chaos`` merges its
rows into ``bench-results/chaos.json`` (``devtools.chaos.record``).

Owns: ``python -m devtools.bench_results``: ``publish`` copies each fresh file into
``bench-results/published/`` (committed; a file only over an older one, chaos rows merged per
letter, newer wins), then ``regenerate`` rewrites the README's parts between the markers from
``published/`` alone: the README states only what the committed files hold, and a file missing
from ``bench-results/`` leaves its table as it is.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import msgspec

from devtools.chaos import record as chaos_record
from twin.bench_record import RESULTS, Result

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PUBLISHED = RESULTS / "published"
BEGIN = "<!-- bench-results:begin (python -m devtools.bench_results writes this part) -->"
END = "<!-- bench-results:end -->"
CHAOS_BEGIN = "<!-- chaos-results:begin (python -m devtools.bench_results writes this part) -->"
CHAOS_END = "<!-- chaos-results:end -->"

# The README's order; files with other names follow, alphabetically.
ORDER = (
    "bench", "bench-latency", "bench-peers", "bench-serial", "fleet", "bench-centre", "twin-bench", "twin-scale",
    "footprint",
)  # fmt: skip


def _result(path: Path) -> Result:
    try:
        return msgspec.json.decode(path.read_bytes(), type=Result)
    except msgspec.DecodeError as exc:
        raise SystemExit(f"{path}: not a benchmark result file: {exc}") from exc


def load(results: Path = PUBLISHED) -> list[Result]:
    """The benchmark results in ``results`` (the chaos file aside), in the README's order."""
    found = {p.stem: _result(p) for p in sorted(results.glob("*.json")) if p.stem != chaos_record.NAME}
    ordered = [found.pop(name) for name in ORDER if name in found]
    return ordered + [found[name] for name in sorted(found)]


def _mark(met: bool | None) -> str:
    return {True: "met", False: "**missed**", None: ""}[met]


def render(result: Result) -> str:
    m = result.machine
    load = "/".join(f"{x:.1f}" for x in m.get("loadavg", []))
    lines = [
        f"**{result.title}**: `{result.command}` ({result.measured_at}, {m.get('cpus')} cores, "
        f"load {load or 'n/a'}, Python {m.get('python')}" + (f"; {result.provenance})" if result.provenance else ")"),
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


def publish(results: Path = RESULTS, published: Path = PUBLISHED) -> list[str]:
    """Copy the fresh files of ``results`` into ``published``; the names of those that changed."""
    changed = []
    for fresh in sorted(results.glob("*.json")):
        target = published / fresh.name
        before = target.read_bytes() if target.is_file() else b""
        if fresh.stem == chaos_record.NAME:
            chaos_record.write(chaos_record.read(fresh), target)
        elif not before or _result(fresh).measured_at >= _result(target).measured_at:
            published.mkdir(parents=True, exist_ok=True)
            target.write_bytes(fresh.read_bytes())
        if target.read_bytes() != before:
            changed.append(fresh.stem)
    return changed


def _between(text: str, begin: str, end: str, body: str, where: Path) -> str:
    if begin not in text or end not in text:
        raise SystemExit(f"{where}: the markers {begin!r} ... {end!r} are missing")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n\n{body}\n{end}{tail}"


def regenerate(readme: Path = README, published: Path = PUBLISHED) -> bool:
    """Rewrite the README between each pair of markers whose files exist; True when it changed."""
    text = readme.read_text()
    new = text
    results = load(published)
    if results:
        new = _between(new, BEGIN, END, "\n".join(render(r) for r in results), readme)
    chaos = chaos_record.read(published / f"{chaos_record.NAME}.json")
    if chaos:
        new = _between(new, CHAOS_BEGIN, CHAOS_END, chaos_record.markdown(chaos), readme)
    if new == text:
        return False
    readme.write_text(new)
    return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.bench_results",
        description="Publish bench-results/*.json into bench-results/published/, then rewrite the README's "
        "benchmark and chaos tables from the published files.",
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of fresh <name>.json (bench-results/)")
    parser.add_argument("--published", type=Path, default=PUBLISHED, help="the committed files the README shows")
    parser.add_argument("--readme", type=Path, default=README, help="the README to rewrite")
    parser.add_argument("--print", action="store_true", help="print the published tables; publish nothing")
    args = parser.parse_args(argv)
    if args.print:
        print("\n".join(render(r) for r in load(args.published)))
        print(chaos_record.markdown(chaos_record.read(args.published / f"{chaos_record.NAME}.json")))
        return
    changed = publish(args.results, args.published)
    print(f"{args.published}: {', '.join(changed) or 'nothing'} published from {args.results}")
    rewritten = regenerate(args.readme, args.published)
    print(f"{args.readme}: {'rewritten from' if rewritten else 'already matches'} {args.published}")


if __name__ == "__main__":
    main()
