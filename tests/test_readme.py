"""The README stays true: CI runs its test command verbatim, its links resolve."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    command = ci[-1].strip()
    assert command.endswith("just test")
    assert command in readme


def test_readme_links_point_at_files_that_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    for target in re.findall(r"\]\(([^)#]+)\)", readme):
        if "://" in target:
            continue
        assert (ROOT / target).exists(), f"README links to missing {target}"


def test_docs_cited_by_code_and_docs_are_in_the_repository() -> None:
    """Every document under docs/ or hardware/ that a source file or doc cites exists here, with the
    section it names; nothing cites design notes that live outside the repository."""
    cited = re.compile(r"\b((?:docs|hardware)/[A-Z_]+\.md)(#[a-z0-9-]+)?")
    sources = [
        path
        for folder in ("edge_agent", "twin", "devtools", "hardware", "tests", "scenarios", "docs", "deploy", "examples")
        for path in (ROOT / folder).rglob("*")
        if path.suffix in {".py", ".md", ".toml", ".conf"} and "__pycache__" not in path.parts
    ]
    sources.append(ROOT / "README.md")
    for source in sources:
        text = source.read_text(errors="replace")
        outside = "FIELD" + ".md"  # the team's design notes: not shipped, so never cited
        assert outside not in text, f"{source.relative_to(ROOT)} cites {outside}, which is not in the repository"
        for doc, anchor in cited.findall(text):
            target = ROOT / doc
            assert target.exists(), f"{source.relative_to(ROOT)} cites missing {doc}"
            if anchor:
                headings = {
                    re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
                    for line in target.read_text().splitlines()
                    if line.startswith("#")
                }
                assert anchor[1:] in headings, f"{source.relative_to(ROOT)} cites {doc}{anchor}: no such section"


# ----- the figures: generated from committed files, and the chaos rows all in the suite ---------------
def test_readme_figures_are_exactly_what_the_committed_result_files_hold(tmp_path: Path) -> None:
    """The README's benchmark and chaos tables are the rendering of `bench-results/published/`
    (committed): regenerating a copy of the README from those files changes nothing."""
    from devtools import bench_results

    published = ROOT / "bench-results" / "published"
    assert (published / "chaos.json").is_file() and bench_results.load(published)
    copy = tmp_path / "README.md"
    copy.write_text((ROOT / "README.md").read_text())
    assert bench_results.regenerate(copy, published) is False, (
        "README.md differs from bench-results/published/: run `python -m devtools.bench_results`"
    )


def _chaos_table_letters() -> set[str]:
    from devtools.bench_results import CHAOS_BEGIN, CHAOS_END

    readme = (ROOT / "README.md").read_text()
    table = readme.split(CHAOS_BEGIN, 1)[1].split(CHAOS_END, 1)[0]
    return {line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ")} - {"row"}


def _letters_run_by_tests_chaos() -> set[str]:
    """The ``chaos_row`` marks pytest sees on the tests of tests/chaos (imported, not grepped)."""
    letters = set()
    for path in sorted((ROOT / "tests" / "chaos").glob("test_*.py")):
        spec = importlib.util.spec_from_file_location(f"_readme_check_{path.stem}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for name, test in vars(module).items():
            if name.startswith("test_") and callable(test):
                letters |= {m.args[0] for m in getattr(test, "pytestmark", []) if m.name == "chaos_row"}
    return letters


def test_every_row_of_the_readme_chaos_table_is_run_by_tests_chaos() -> None:
    from devtools.chaos.cli import ROWS

    in_readme = _chaos_table_letters()
    assert set("abcdefghij") <= in_readme, sorted(in_readme)  # the parser reads the table at all
    run = _letters_run_by_tests_chaos()
    assert not in_readme - run, f"rows {sorted(in_readme - run)} of the README's chaos table are not in tests/chaos"
    assert not set(ROWS) - run, f"rows {sorted(set(ROWS) - run)} of `just chaos` are not in tests/chaos"
