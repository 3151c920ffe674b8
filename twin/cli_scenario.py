"""``twin run``, ``twin compare``, ``twin validate`` and ``twin kpis``: a scenario's replications,
two policies side by side, a policy against the scenario's gates.

Owns: these commands' options, replications with a progress bar, tables, reports and exit
codes (a failed gate exits with status 1; an unreachable cluster with status 2).
Must not import: edge_agent.agent/engine/transports.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from twin.cli_common import OutOpt, console, err, load_or_exit

ScenarioArg = Annotated[Path, typer.Argument(help="Scenario TOML file (see scenarios/).")]
RepsOpt = Annotated[int | None, typer.Option("--replications", "-n", help="Replications (default: scenario's).")]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Seed (default: scenario's).")]
DaysOpt = Annotated[int | None, typer.Option("--days", help="Nights to simulate (default: scenario's).")]
WorkersOpt = Annotated[int | None, typer.Option("--workers", help="Local worker processes (default: one per core).")]
ClusterOpt = Annotated[
    str | None,
    typer.Option("--cluster", help="Dask scheduler address, e.g. tcp://127.0.0.1:8786."),
]


def replicate_with_progress(
    scenario: Path,
    policy: Path | None,
    reps: int,
    seed: int,
    days: int | None,
    workers: int | None,
    cluster: str | None,
    label: str,
) -> list[dict[str, Any]]:
    from twin.executors import run_replications
    from twin.replication import replication_seeds

    seeds = replication_seeds(seed, reps)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    ) as progress:
        task = progress.add_task(label, total=reps)
        try:
            return run_replications(
                str(scenario),
                str(policy) if policy else None,
                seeds,
                days,
                workers=workers,
                cluster=cluster,
                progress=lambda k: progress.advance(task, k),
            )
        except OSError as exc:
            err.print(
                f"[red]cannot reach the cluster[/red] {cluster}: {exc}; "
                "start one with `dask scheduler` and `dask worker ADDRESS`"
            )
            raise typer.Exit(2) from None


def print_kpis(table: dict[str, dict[str, Any]], names: list[str] | None = None) -> None:
    out = Table(title="KPIs (mean +- 95% CI over replications)")
    out.add_column("KPI")
    out.add_column("mean", justify="right")
    out.add_column("95% CI", justify="right")
    for name in names or list(table):
        if name in table:
            v = table[name]
            ci = "-" if math.isnan(v["ci95"]) else f"{v['ci95']:.4g}"
            out.add_row(name, f"{v['mean']:.4g}", ci)
    console.print(out)


HEADLINE = [
    "energy_kwh",
    "energy_saving",
    "dark_hours_lit",
    "outage_lamp_hours",
    "repair_hours_mean",
    "sos_p90_min",
    "sos_town_p90_min",
    "sos_village_p90_min",
    "within_target_town",
    "within_target_village",
    "utilisation_village_doctor",
    "ack_p90_s",
    "ack_within_60s",
    "ack_within_180s",
    "gateway_msgs_per_s_mean",
]


def run(
    scenario: ScenarioArg,
    out: OutOpt,
    replications: RepsOpt = None,
    seed: SeedOpt = None,
    days: DaysOpt = None,
    workers: WorkersOpt = None,
    cluster: ClusterOpt = None,
) -> None:
    """Run replications of a scenario; write DIR/kpis.json, DIR/report.html and plots."""
    from twin.report import write_run_report
    from twin.sim.reach import describe_channels

    loaded = load_or_exit(scenario)
    meta = loaded.spec.scenario
    reps = replications or meta.replications
    seed = meta.seed if seed is None else seed
    results = replicate_with_progress(scenario, None, reps, seed, days, workers, cluster, meta.name)
    info = {
        "scenario": meta.name,
        "scenario_file": str(scenario),
        "scenario_sha256": loaded.sha256,
        "policy": loaded.policy.policy.name,
        "policy_sha256": loaded.policy.sha256,
        "replications": reps,
        "seed": seed,
        "days": results[0]["days"],
        "seeds": [r["seed"] for r in results],
        "channels": describe_channels(loaded.spec, loaded.policy),
    }
    table = write_run_report(out, info, results)
    print_kpis(table, HEADLINE)
    console.print(f"wrote {out / 'kpis.json'} and {out / 'report.html'}")


def compare(
    scenario: ScenarioArg,
    out: OutOpt,
    policy: Annotated[list[Path], typer.Option("--policy", help="Policy file; give exactly two (A, then B).")],
    replications: RepsOpt = None,
    seed: SeedOpt = None,
    days: DaysOpt = None,
    workers: WorkersOpt = None,
    cluster: ClusterOpt = None,
) -> None:
    """Run a scenario under policy A and policy B (same seeds); verdict per KPI for B vs A."""
    from twin.report import aggregate, compare_tables, write_compare_report

    if len(policy) != 2:
        err.print("give exactly two policies: --policy A.toml --policy B.toml")
        raise typer.Exit(2)
    loaded = [load_or_exit(scenario, p) for p in policy]
    meta = loaded[0].spec.scenario
    reps = replications or meta.replications
    seed = meta.seed if seed is None else seed
    tables = []
    for p, lo in zip(policy, loaded, strict=True):
        results = replicate_with_progress(scenario, p, reps, seed, days, workers, cluster, lo.policy.policy.name)
        tables.append(aggregate(results))
    rows = compare_tables(tables[0], tables[1])
    info = {
        "scenario": meta.name,
        "policy_a": str(policy[0]),
        "policy_b": str(policy[1]),
        "replications": reps,
        "seed": seed,
    }
    write_compare_report(out, info, rows)
    table = Table(title=f"B = {policy[1].name} vs A = {policy[0].name}")
    for col in ("KPI", "A", "B", "B vs A"):
        table.add_column(col)

    def cell(m: float | None, h: float | None) -> str:
        return "-" if m is None else f"{m:.4g} +- {h:.2g}" if h is not None else f"{m:.4g}"

    for r in rows:
        colour = {"better": "green", "worse": "red"}.get(r["verdict"], "")
        table.add_row(
            r["kpi"],
            cell(r["a_mean"], r["a_ci95"]),
            cell(r["b_mean"], r["b_ci95"]),
            f"[{colour}]{r['verdict']}[/{colour}]" if colour else r["verdict"],
        )
    console.print(table)
    console.print(f"wrote {out / 'compare.json'} and {out / 'report.html'}")


def validate(
    policy: Annotated[Path, typer.Argument(help="Policy TOML file to validate.")],
    scenario: Annotated[Path, typer.Option("--scenario", help="Scenario whose gates apply.")],
    out: OutOpt,
    replications: RepsOpt = None,
    seed: SeedOpt = None,
    days: DaysOpt = None,
    workers: WorkersOpt = None,
    cluster: ClusterOpt = None,
    shadow: Annotated[
        Path | None,
        typer.Option("--shadow", help="A gateway's shadow report of POLICY (`edge-agent shadow report --json`)."),
    ] = None,
) -> None:
    """Run the scenario with POLICY, check its gates, write DIR/validation.json (exit 1 on fail).

    With --shadow, the record also carries the field evidence: the report of a gateway that ran
    POLICY in shadow mode (refused unless it is for this exact file)."""
    from edge_agent.policy.validation_record import Gate, ValidationRecord, encode_validation_record
    from twin.report import write_run_report
    from twin.sim.reach import describe_channels

    loaded = load_or_exit(scenario, policy)
    evidence = None
    if shadow is not None:
        from twin.shadow import ShadowEvidenceError, load_shadow_evidence

        try:
            evidence = load_shadow_evidence(shadow, hashlib.sha256(loaded.policy_bytes).hexdigest())
        except ShadowEvidenceError as exc:
            err.print(f"[red]--shadow refused[/red]: {exc}", highlight=False)
            raise typer.Exit(2) from None
    if not loaded.spec.gates:
        err.print(f"{scenario}: gates: the scenario has no [[gates]]; add some to validate")
        raise typer.Exit(2)
    meta = loaded.spec.scenario
    reps = replications or meta.replications
    seed = meta.seed if seed is None else seed
    results = replicate_with_progress(scenario, policy, reps, seed, days, workers, cluster, "validate")
    info = {
        "scenario": meta.name,
        "policy": loaded.policy.policy.name,
        "policy_sha256": loaded.policy.sha256,
        "replications": reps,
        "seed": seed,
        "days": results[0]["days"],
        "channels": describe_channels(loaded.spec, loaded.policy),
    }
    table = write_run_report(out, info, results)
    kpis = {k: float(v["mean"]) for k, v in table.items() if math.isfinite(v["mean"])}
    gates = []
    for g in loaded.spec.gates:
        if g.kpi not in kpis:
            err.print(
                f"{scenario}: gate {g.name!r}: KPI {g.kpi!r} was not produced (no such "
                "incidents or responders in this scenario?)"
            )
            raise typer.Exit(2)
        value = kpis[g.kpi]
        ok = value <= g.limit if g.op == "<=" else value >= g.limit
        gates.append(Gate(name=g.name, kpi=g.kpi, op=g.op, limit=float(g.limit), value=value, passed=ok))
    record = ValidationRecord(
        policy_sha256=hashlib.sha256(loaded.policy_bytes).hexdigest(),
        scenario=meta.name,
        scenario_sha256=loaded.sha256,
        kpis=kpis,
        gates=tuple(gates),
        passed=all(g.passed for g in gates),
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        tool_version="twin 0.1.0",
        shadow=evidence,
    )
    (out / "validation.json").write_bytes(encode_validation_record(record))
    view = Table(title=f"{loaded.policy.policy.name} on {meta.name}")
    for col in ("gate", "KPI", "value", "limit", "verdict"):
        view.add_column(col)
    for g in gates:
        view.add_row(
            g.name,
            g.kpi,
            f"{g.value:.4g}",
            f"{g.op} {g.limit:g}",
            "[green]pass[/green]" if g.passed else "[red]FAIL[/red]",
        )
    console.print(view)
    if evidence is not None:
        from twin.shadow import summary_lines

        for line in summary_lines(evidence):
            console.print(line, highlight=False, soft_wrap=True)
    console.print(f"wrote {out / 'validation.json'} (policy sha256 {record.policy_sha256[:16]}...)")
    if not record.passed:
        raise typer.Exit(1)


def kpis() -> None:
    """List KPI names usable in gates (response, utilisation and answer names follow patterns)."""
    from twin.kpis import FIXED

    for name, (_, text) in FIXED.items():
        console.print(f"{name:32s} {text}")
    console.print("{type}[_{town|village}]_p{50|90|95}_min  response times, e.g. sos_p90_min")
    console.print("utilisation_{role}              busy share of on-shift time")
    console.print(
        "ack_p{50|90}_s[_{role}]          seconds raised -> acknowledged by a person (per tier: per notification)"
    )
    console.print("ack_within_{60|180}s[_{role}]    share acknowledged within 60 s / 180 s (telecare: 97.5% / 99%)")
