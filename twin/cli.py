"""The ``twin`` command: run, compare, validate scenarios; benchmark the kernels.

Owns: argument parsing, progress display and exit codes. Errors in scenario or policy files are
printed with file and key path and exit with status 2; a failed gate exits with status 1.
Must not import: edge_agent.agent/engine/transports.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from edge_agent.errors import ConfigError
from twin.scenario import load_scenario

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="District digital twin: lighting (Numba), incidents and dispatch (SimPy), one policy.",
)
console = Console()
err = Console(stderr=True)

ScenarioArg = Annotated[Path, typer.Argument(help="Scenario TOML file (see scenarios/).")]
OutOpt = Annotated[Path, typer.Option("--out", help="Output directory (created).")]
RepsOpt = Annotated[int | None, typer.Option("--replications", "-n", help="Replications (default: scenario's).")]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Seed (default: scenario's).")]
DaysOpt = Annotated[int | None, typer.Option("--days", help="Nights to simulate (default: scenario's).")]
WorkersOpt = Annotated[int | None, typer.Option("--workers", help="Local worker processes (default: one per core).")]
ClusterOpt = Annotated[
    str | None,
    typer.Option("--cluster", help="Dask scheduler address, e.g. tcp://127.0.0.1:8786."),
]


def _load(path: Path, policy: Path | None = None) -> Any:
    try:
        return load_scenario(path, policy)
    except ConfigError as exc:
        err.print(f"[red]invalid input[/red] ({len(exc.problems)} problem(s)):")
        for problem in exc.problems:
            err.print(f"  {problem}", markup=False, highlight=False)
        raise typer.Exit(2) from None


def _replicate(
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


def _print_kpis(table: dict[str, dict[str, Any]], names: list[str] | None = None) -> None:
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
    "gateway_msgs_per_s_mean",
]


@app.command()
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

    loaded = _load(scenario)
    meta = loaded.spec.scenario
    reps = replications or meta.replications
    seed = meta.seed if seed is None else seed
    results = _replicate(scenario, None, reps, seed, days, workers, cluster, meta.name)
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
    }
    table = write_run_report(out, info, results)
    _print_kpis(table, HEADLINE)
    console.print(f"wrote {out / 'kpis.json'} and {out / 'report.html'}")


@app.command()
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
    loaded = [_load(scenario, p) for p in policy]
    meta = loaded[0].spec.scenario
    reps = replications or meta.replications
    seed = meta.seed if seed is None else seed
    tables = []
    for p, lo in zip(policy, loaded, strict=True):
        results = _replicate(scenario, p, reps, seed, days, workers, cluster, lo.policy.policy.name)
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


@app.command()
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
    from edge_agent.policy.bundle import (
        Gate,
        ValidationRecord,
        encode_validation_record,
    )
    from twin.report import write_run_report

    loaded = _load(scenario, policy)
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
    results = _replicate(scenario, policy, reps, seed, days, workers, cluster, "validate")
    info = {
        "scenario": meta.name,
        "policy": loaded.policy.policy.name,
        "policy_sha256": loaded.policy.sha256,
        "replications": reps,
        "seed": seed,
        "days": results[0]["days"],
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


@app.command()
def bench(
    scenario: Annotated[Path, typer.Option(help="Scenario whose district is timed.")] = Path(
        "scenarios/naxi-3000.toml"
    ),
    days: Annotated[int, typer.Option(help="Nights (a year by default).")] = 365,
    threads: Annotated[
        int | None, typer.Option(help="Threads over lamp blocks (default: the cores this process may use).")
    ] = None,
    scale: Annotated[
        bool,
        typer.Option(
            "--scale",
            help="City and province: the district and 100,000 lamps on threads, then 1,000,000 lamps on a "
            "dask scheduler + 2 dask workers started here on loopback, a 30,000-lamp slice checked against "
            "this process (about 5-10 minutes on 2 cores). Writes bench-results/twin-scale.json.",
        ),
    ] = False,
    province_lamps: Annotated[int, typer.Option(help="--scale: lamps in the province run.")] = 1_000_000,
    city_lamps: Annotated[int, typer.Option(help="--scale: lamps in the city run (threads).")] = 100_000,
    workers: Annotated[int, typer.Option(help="--scale: dask worker processes.")] = 2,
    worker_threads: Annotated[int, typer.Option(help="--scale: --nthreads of each dask worker.")] = 1,
    memory_limit: Annotated[str, typer.Option(help="--scale: --memory-limit of each dask worker.")] = "3GiB",
    record: Annotated[
        bool,
        typer.Option(
            help="Write the figures to bench-results/<name>.json (the checkout's; ./bench-results from a wheel)."
        ),
    ] = True,
) -> None:
    """Speed figures: JIT cold/cached, a lamp-year on threads, the plain-SimPy reference ratio.

    Without --scale (about a minute): the district's year (lighting, motion, failures and
    repairs) on all cores and on one, 10x the lamps, parallel == serial, and the plain-SimPy
    reference with the same features timed in the same run (ratio per lamp-minute). Writes
    bench-results/twin-bench.json.
    """
    import os
    import sys

    from twin.bench import record_rows

    _load(scenario)
    load_start = os.getloadavg()
    command = "twin bench " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else "twin bench"
    if scale:
        from twin.bench_scale import run_scale

        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
        ) as bar:
            tasks = [bar.add_task("starting", total=None)]

            def stage(text: str) -> None:  # one line per stage; the province's shows lamps done
                bar.update(tasks[-1], visible=False)
                tasks.append(bar.add_task(text, total=None))

            def lamps(done: int, total: int) -> None:
                bar.update(tasks[-1], completed=done, total=total)

            rows = run_scale(
                str(scenario), days, city_lamps=city_lamps, province_lamps=province_lamps, workers=workers,
                worker_threads=worker_threads, memory_limit=memory_limit, threads=threads, stage=stage, lamps=lamps,
            )  # fmt: skip
        name, title = "twin-scale", "twin bench --scale (a city on threads, a province on Dask)"
    else:
        from twin.bench import run_bench

        with console.status("benchmarking (about a minute)...") as status:
            rows = run_bench(str(scenario), days, threads=threads, stage=lambda t: status.update(t + "..."))
        name, title = "twin-bench", "twin bench (Numba kernels, threads over lamp blocks)"
    table = Table(title=title)
    for col in ("measure", "value", "aim", "", "note"):
        table.add_column(col)
    for r in rows:
        mark = {True: "[green]met[/green]", False: "[red]missed[/red]", None: ""}[r.met]
        table.add_row(r.name, r.value, r.aim, mark, r.note)
    console.print(table)
    load_end = os.getloadavg()
    console.print(f"load average at start {load_start[0]:.1f}, at end {load_end[0]:.1f} ({os.cpu_count()} cores)")
    if record:
        console.print(record_rows(name, title, command, rows, {"loadavg_start": list(load_start)}))


@app.command()
def warm() -> None:
    """Compile the kernels into the Numba cache now (install time), so later runs load them."""
    import os

    from twin.city import warm_kernels

    with console.status("compiling the kernels..."):
        seconds = warm_kernels()
    console.print(f"kernels ready in {seconds:.1f} s, cache {os.environ.get('NUMBA_CACHE_DIR')}")


@app.command()
def kpis() -> None:
    """List KPI names usable in gates (response and utilisation names follow patterns)."""
    from twin.kpis import FIXED

    for name, (_, text) in FIXED.items():
        console.print(f"{name:32s} {text}")
    console.print("{type}[_{town|village}]_p{50|90|95}_min  response times, e.g. sos_p90_min")
    console.print("utilisation_{role}              busy share of on-shift time")


@app.command()
def rollout(
    out: OutOpt,
    gateways: Annotated[int, typer.Option(help="Gateways in the district.")] = 1000,
    lamps_per_gateway: Annotated[int, typer.Option(help="Lamps per gateway.")] = 100,
    loss: Annotated[float, typer.Option(help="Message loss, each way (program to lamp, report back).")] = 0.05,
    down: Annotated[float, typer.Option(help="Fraction of gateways down (killed, back later) during it.")] = 0.01,
    replications: Annotated[int, typer.Option("--replications", "-n", help="Replications.")] = 20,
    seed: Annotated[int, typer.Option(help="Seed.")] = 1,
    calibration: Annotated[str, typer.Option(help="ci (the 2-core fleet run) or field (one CPU per gateway).")] = (
        "field"
    ),
    horizon: Annotated[float | None, typer.Option(help="Seconds simulated (default: calibration's).")] = None,
) -> None:
    """Model a policy rollout: convergence, 10/50/90% confirmed, retries; DIR/rollout.json + PNG."""
    import json

    from twin.rollout import aggregate, configure, params_dict, replicate

    try:
        params = configure(
            calibration,
            gateways=gateways,
            lamps_per_gateway=lamps_per_gateway,
            loss=loss,
            down=down,
            horizon_s=horizon,
        )
    except ValueError as exc:
        err.print(str(exc))
        raise typer.Exit(2) from None
    with console.status(f"{replications} rollouts to {params.lamps:,} lamps..."):
        results = replicate(params, replications, seed)
    table = aggregate(results)
    view = Table(
        title=f"rollout: {gateways:,} gateways x {lamps_per_gateway} lamps ({calibration}), {replications} reps"
    )
    for col in ("measure", "median", "90% interval"):
        view.add_column(col, justify="right")
    names = {
        "convergence_s": "convergence (s)",
        "p10_s": "10% confirmed (s)",
        "p50_s": "50% confirmed (s)",
        "p90_s": "90% confirmed (s)",
        "messages": "messages",
        "retries": "retries",
        "left_behind": "lamps left behind",
    }
    for key, name in names.items():
        v = table[key]
        view.add_row(name, f"{v['median']:.4g}", f"{v['lo90']:.4g} - {v['hi90']:.4g}")
    console.print(view)
    out.mkdir(parents=True, exist_ok=True)
    finite = [float(r.confirmed_at[np.isfinite(r.confirmed_at)].max(initial=0.0)) for r in results]
    grid = np.linspace(0.0, max(1.0, max(finite) * 1.05), 400)
    curves = np.array([r.curve(grid) for r in results])
    doc = {
        "calibration": calibration,
        "params": params_dict(params),
        "replications": replications,
        "seed": seed,
        "summary": table,
        "per_replication": [r.summary() for r in results],
        "curve": {"t_s": grid.tolist(), "median_fraction": np.median(curves, axis=0).tolist()},
    }
    (out / "rollout.json").write_text(json.dumps(doc, indent=1, default=str))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.fill_between(grid, curves.min(axis=0), curves.max(axis=0), alpha=0.3, label="range over replications")
    ax.plot(grid, np.median(curves, axis=0), label="median")
    ax.set_xlabel("seconds after the centre publishes")
    ax.set_ylabel("fraction of lamps confirmed")
    ax.set_title(f"{params.lamps:,} lamps, {loss:.0%} loss, {down:.0%} gateways down ({calibration})")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "rollout.png", dpi=100)
    plt.close(fig)
    console.print(f"wrote {out / 'rollout.json'} and {out / 'rollout.png'}")


@app.command()
def calibrate(
    stores: Annotated[list[Path], typer.Argument(help="Gateway stores (gateway.sqlite3), one or more.")],
    out: Annotated[Path, typer.Option("--out", help="The fitted scenario to write (TOML; plus OUT.fit.json).")],
    base: Annotated[
        Path, typer.Option("--base", help="The district's scenario: site, district, responders, policy.")
    ] = Path("scenarios/naxi-3000.toml"),
    level: Annotated[float, typer.Option(help="Confidence level of the intervals.")] = 0.95,
    until: Annotated[float | None, typer.Option(help="End of the observation (epoch s; default: last record).")] = None,
) -> None:
    """Fit a scenario to the gateways' own history: incident rates by hour and kind, ack delays,
    lamp failures and repairs, motion, uplink outages; each value with its interval."""
    from twin.calibrate import calibrate as fit
    from twin.calibrate.write import write_scenario

    loaded = _load(base)
    try:
        cal = fit(list(stores), loaded, until=until, level=level)
        fitted, sidecar = write_scenario(cal, loaded, out)
    except ConfigError as exc:
        for problem in exc.problems:
            err.print(f"  {problem}", markup=False, highlight=False)
        raise typer.Exit(2) from None
    view = Table(title=f"calibrated from {len(stores)} store(s), {cal.days:.1f} gateway-days ({level:.0%} CIs)")
    for col in ("parameter", "fitted", "interval", "n"):
        view.add_column(col)
    for key, e in cal.estimates.items():
        view.add_row(key, f"{e.value:.4g}", f"{e.lo:.4g} - {e.hi:.4g}", str(e.n))
    console.print(view)
    console.print(f"wrote {out} ({fitted.spec.scenario.name}) and {sidecar}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
