"""`edge-agent shadow ...`: read what shadow mode found (edge_agent/agent/shadow.py).

Owns: the ``shadow report`` command and the report's table (``print_report``, which the demo
reuses). The JSON form (``--json``) is what ``twin validate --shadow`` takes.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from edge_agent.cli.terminal import LazyConsole, escape
from edge_agent.config import load_config
from edge_agent.errors import ConfigError
from edge_agent.policy.shadow_report import ShadowDay, ShadowReport, encode_report, totals

if TYPE_CHECKING:
    from rich.console import Console


__all__ = ["print_report", "shadow_app"]

shadow_app = typer.Typer(
    help="Shadow mode: a candidate policy run beside the active one, acting on nothing.",
    no_args_is_help=True,
    add_completion=False,
)
_out = LazyConsole()
_err = LazyConsole(stderr=True)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} x{v}" for k, v in sorted(counts.items())) or "-"


def print_report(report: ShadowReport, console: Console | LazyConsole, *, title: str | None = None) -> None:
    """One row per day, then where the lamps differed and which responders did."""
    from rich.table import Table

    table = Table(
        title=title or f"Shadow: candidate {report.candidate} ({report.candidate_sha256[:12]}) on {report.gateway}"
    )
    for column in ("day", "lamp·min", "Δlevel·min", "alerts =/A/C", "resp.", "publish A/C", "err", "ms"):
        table.add_column(column, no_wrap=column == "day")
    for day in report.days:
        only_a, only_c = sum(day.alerts_only_active.values()), sum(day.alerts_only_candidate.values())
        table.add_row(
            day.day + ("" if day.complete else "*"),
            f"{day.lamps.lamp_minutes:g}",
            f"{day.lamps.level_minutes:g}",
            f"{day.alerts_both}/{only_a}/{only_c}",
            str(day.responder_differences),
            f"{sum(day.published_only_active.values())}/{sum(day.published_only_candidate.values())}",
            str(day.candidate_errors) + (f" +{day.dropped} dropped" if day.dropped else ""),
            f"{day.candidate_ms:.0f}",
        )
    console.print(table)
    for day in report.days:
        _print_where(day, console)
    total = totals(report)
    console.print("  (* the day is still open; lamp·min: lamp-minutes at another level; Δlevel·min: sum of |Δ%| x min)")
    console.print(
        f"over {total['days']:g} day(s) of {report.days_planned} planned (from {report.started}): "
        f"{total['lamp_minutes']:g} lamp-minutes at another level ({total['level_minutes']:g} level-minutes), "
        f"{total['responder_differences']:g} responder choice(s), "
        f"{total['alerts_only_active'] + total['alerts_only_candidate']:g} alert(s) raised by one side only"
    )


def _print_where(day: ShadowDay, console: Console | LazyConsole) -> None:
    for group, diff in sorted(day.groups.items()):
        console.print(
            f"  {day.day} lamp group {escape(group)}: {diff.lamp_minutes:g} lamp-minutes apart, "
            f"{diff.level_minutes:g} level-minutes"
        )
    for side, counts in (("active", day.alerts_only_active), ("candidate", day.alerts_only_candidate)):
        if counts:
            console.print(f"  {day.day} alerts raised only by the {side}: {escape(_counts(counts))}")
    for side, counts in (("active", day.published_only_active), ("candidate", day.published_only_candidate)):
        if counts:
            console.print(f"  {day.day} published only by the {side}: {escape(_counts(counts))}")
    for choice in day.responders:
        console.print(
            f"  {day.day} alert {escape(choice.rule)} of {escape(choice.device)}, step {choice.step}: "
            f"active chose {escape(choice.active)}, candidate {escape(choice.candidate)}"
        )
    if day.responder_differences > len(day.responders):
        console.print(f"  ... and {day.responder_differences - len(day.responders)} more")


@shadow_app.command()
def report(
    config: Annotated[Path, typer.Option("--config", "-c", help="The gateway's TOML file.")],
    as_json: Annotated[bool, typer.Option("--json", help="The report as JSON (for twin validate --shadow).")] = False,
) -> None:
    """Print the shadow report kept in the gateway's data dir (the open day included)."""
    from edge_agent.agent.shadow_store import read_report  # the store, only when read

    try:
        loaded = load_config(config)
    except ConfigError as exc:
        _err.print(f"[red]{len(exc.problems)} problem(s) in the configuration:[/red]")
        for problem in exc.problems:
            _err.print(f"  {problem}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    found = read_report(loaded)
    if found is None:
        where = "add a [shadow] section and run the agent" if loaded.file.shadow is None else "run the agent first"
        _err.print(f"[red]no shadow report in {loaded.data_dir}[/red]: {where}")
        raise typer.Exit(1)
    if as_json:
        sys.stdout.write(encode_report(found).decode() + "\n")
        return
    print_report(found, _out)
