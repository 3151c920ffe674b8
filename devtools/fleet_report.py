"""`just fleet`'s figures: what one phase measured (``Phase``), where the time went, the
tables it prints and the JSON it records (bench-results/fleet.json, whose ``extra.runs``
the rollout calibration's snapshot, twin/data/fleet-measured.json, copies). devtools/fleet.py runs the fleet.
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from twin.bench_record import Row, record

console = Console(width=None if sys.stdout.isatty() else 160)

AIMS = {"no faults": 3.0, "faults": 10.0}  # seconds until every lamp reports the new version (median)
# the agent's own stamps (wall clock) in its ``rollout-timing`` lines; "started": a restarted
# gateway's first rollout round began (it runs the accepted bundle from its store)
AGENT_STAMPS = ("received", "verified", "stored", "installed", "first_program", "programs_sent", "started",
                "confirmed_gw")  # fmt: skip
# Where a gateway's rollout time goes, in order; each segment ends at the stamp of that name
# (wall clock: the agent logs its stamps in one ``rollout-timing`` JSON line, the controller
# adds when it published the gateway's bundle and when the gateway's last lamp reported).
SEGMENTS = (
    ("centre publish", "published"),  # the controller's publishes to the gateways before this one
    ("delivery", "received"),  # broker -> the agent's policy handler
    ("verify", "verified"),  # envelope, signature, target, validity, policy parse and fit
    ("store", "stored"),  # accepted durably (verified again under the write lock, fsync)
    ("apply", "installed"),  # engine swapped, levels decided, commands queued
    ("program writes", "programs_sent"),  # every lamp's first program copy PUBACKed
    ("reports", "confirmed"),  # the gateway's last lamp reports the version (retries included)
)


@dataclass
class Phase:
    name: str
    lamps: int
    gateways: int
    seconds: float | None = None
    messages: int = 0  # lamp state reports seen during the phase
    retries: int = 0
    left_behind: int = 0
    restarted: list[str] = field(default_factory=list)
    quantiles: tuple[float, ...] = ()  # seconds until 10%, 50%, 90% of lamps confirmed
    # per gateway (not restarted): the wall-clock stamps of SEGMENTS, from ``started``
    stamps: dict[str, dict[str, float]] = field(default_factory=dict)
    # CPU seconds used during the phase, by process group, and the machine's busy share
    cpu: dict[str, float] = field(default_factory=dict)
    # the centre's canary wave (gateways, seconds from its publish until the centre started the
    # next wave), measured apart: the figures above count from the main wave's publish
    canary_gateways: int = 0
    canary_s: float | None = None

    @property
    def faulty(self) -> bool:
        return bool(self.restarted) or self.name != "no faults"

    def segments(self) -> dict[str, list[float]]:
        """Each segment's seconds, one value per gateway with a complete set of stamps."""
        out: dict[str, list[float]] = {name: [] for name, _ in SEGMENTS}
        for gw, stamps in self.stamps.items():
            if gw in self.restarted or not all(stamp in stamps for _, stamp in SEGMENTS):
                continue
            before = 0.0
            for name, stamp in SEGMENTS:
                out[name].append(max(0.0, stamps[stamp] - before))
                before = max(before, stamps[stamp])
        return out

    def restarts(self) -> dict[str, dict[str, float]]:
        """For each restarted gateway: seconds from its kill to its first round of programs
        starting (process start-up, connect) and to their PUBACKs, and to its last lamp's report."""
        out: dict[str, dict[str, float]] = {}
        for gw in self.restarted:
            st = self.stamps.get(gw, {})
            if "killed" not in st:
                continue
            out[gw] = {k: round(st[k] - st["killed"], 3) for k in ("started", "programs_sent", "confirmed") if k in st}
        return out

    def breakdown(self) -> dict[str, dict[str, float]]:
        """Per segment: the median gateway, the slowest gateway on that segment, and the
        segment as it was on the critical path (the gateway whose last lamp reported last)."""
        per = self.segments()
        complete = {
            gw: st for gw, st in self.stamps.items() if gw not in self.restarted and all(x in st for _, x in SEGMENTS)
        }
        critical = max(complete, key=lambda gw: complete[gw]["confirmed"], default=None)
        out: dict[str, dict[str, float]] = {}
        before = 0.0
        for name, stamp in SEGMENTS:
            values = per[name]
            if not values:
                continue
            row = {"median": statistics.median(values), "max": max(values)}
            if critical is not None:
                row["critical"] = max(0.0, complete[critical][stamp] - before)
                before = max(before, complete[critical][stamp])
            out[name] = {k: round(v, 3) for k, v in row.items()}
        return out


def _seconds(value: float | None) -> str:
    return f"{value:.2f} s" if value is not None else "[red]timeout[/red]"


def print_phases(phases: list[Phase], title: str = "Policy rollout to the fleet") -> None:
    table = Table(title=title)
    for column in (
        "phase",
        "lamps",
        "gateways",
        "convergence",
        "10/50/90% confirmed",
        "reports seen",
        "retries",
        "left behind",
        "restarted",
        "canary wave",
        "CPU s: gateways / lamps / broker / controller (machine busy)",
    ):
        table.add_column(column)
    for p in phases:
        table.add_row(
            p.name,
            f"{p.lamps:,}",
            str(p.gateways),
            _seconds(p.seconds),
            " / ".join(f"{q:.2f}" for q in p.quantiles) + " s" if p.quantiles else "-",
            f"{p.messages:,}",
            f"{p.retries:,}",
            str(p.left_behind),
            str(len(p.restarted)),
            f"{p.canary_gateways} gw, {_seconds(p.canary_s)}" if p.canary_gateways else "-",
            _cpu_cell(p),
        )
    console.print(table)
    print_breakdown(phases)


def _cpu_cell(p: Phase) -> str:
    c = p.cpu
    if not c:
        return "-"
    groups = " / ".join(f"{c[k]:.1f}" for k in ("gateways", "lamp simulators", "mosquitto", "controller"))
    share = c["machine busy"] / c["machine total"] if c.get("machine total") else 0.0
    return f"{groups} ({share:.0%})"


def print_breakdown(phases: list[Phase]) -> None:
    """Where the time went: per segment, the median gateway, the slowest one and the critical
    path (the gateway whose last lamp reported last), in seconds."""
    table = Table(title="Where the time goes (s): median gateway / slowest / critical path")
    table.add_column("phase")
    for name, _ in SEGMENTS:
        table.add_column(name)
    table.add_column("gateways")
    for p in phases:
        parts = p.breakdown()
        cells = [
            f"{b['median']:.2f} / {b['max']:.2f} / {b.get('critical', float('nan')):.2f}"
            if (b := parts.get(name))
            else "-"
            for name, _ in SEGMENTS
        ]
        table.add_row(p.name, *cells, str(len(p.segments()["reports"])))
    console.print(table)
    for p in phases:
        turn = [st["turnaround_p90"] for gw, st in p.stamps.items() if gw not in p.restarted and "turnaround_p90" in st]
        deferred = sum(int(st.get("deferred", 0)) for st in p.stamps.values())
        if turn:
            console.print(
                f"{p.name}: lamp turnaround at the gateways (first copy PUBACKed -> its report handled), p90 per "
                f"gateway: median {statistics.median(turn):.2f} s, max {max(turn):.2f} s; retries held back while "
                f"confirmations were arriving: {deferred:,}"
            )
        for gw, r in sorted(p.restarts().items()):
            steps = ", ".join(f"{k} +{v:.2f} s" for k, v in r.items())
            console.print(f"{p.name}: {gw} killed, then {steps}")


def aim_of(phase: Phase) -> float:
    return AIMS["faults" if phase.faulty else "no faults"]


def summarise(runs: Sequence[Sequence[Phase]]) -> list[dict[str, object]]:
    """Per phase over the runs: convergence median/min/max against the aim, quantiles, retries,
    and each breakdown segment's median over the runs (of the median gateway and of the
    critical path)."""
    out: list[dict[str, object]] = []
    for index, first in enumerate(runs[0]):
        same = [run[index] for run in runs if len(run) > index]
        times = [p.seconds for p in same]
        finished = [t for t in times if t is not None]
        median = statistics.median(finished) if len(finished) == len(times) else None
        breakdowns = [p.breakdown() for p in same]
        segments: dict[str, dict[str, float]] = {}
        for name, _ in SEGMENTS:
            medians = [b[name]["median"] for b in breakdowns if name in b]
            critical = [b[name]["critical"] for b in breakdowns if name in b and "critical" in b[name]]
            if medians:
                segments[name] = {
                    "median": round(statistics.median(medians), 3),
                    "critical": round(statistics.median(critical), 3) if critical else float("nan"),
                }
        quantiles = [p.quantiles for p in same if p.quantiles]
        out.append(
            {
                "phase": first.name,
                "runs": len(same),
                "aim_s": aim_of(first),
                "median_s": None if median is None else round(median, 3),
                "min_s": round(min(finished), 3) if finished else None,
                "max_s": round(max(finished), 3) if finished else None,
                "timeouts": len(times) - len(finished),
                "quantiles_s": [round(statistics.median(q[i] for q in quantiles), 3) for i in range(3)]
                if quantiles
                else None,
                "retries": [min(p.retries for p in same), max(p.retries for p in same)],
                "left_behind": max(p.left_behind for p in same),
                "met": median is not None and median <= aim_of(first) and all(p.left_behind == 0 for p in same),
                "breakdown": segments,
            }
        )
    return out


SUMMARY_COLUMNS = [
    "phase",
    "runs",
    "convergence median (min-max)",
    "aim",
    "10/50/90% confirmed (median)",
    "retries",
    "left behind",
    *(f"{name} (median gw / critical)" for name, _ in SEGMENTS),
]


def summary_cells(summary: list[dict[str, object]]) -> list[list[str]]:
    rows = []
    for s in summary:
        median, low, high = s["median_s"], s["min_s"], s["max_s"]
        quantiles = s["quantiles_s"]
        retries = s["retries"]
        breakdown = s["breakdown"]
        assert isinstance(retries, list) and isinstance(breakdown, dict)
        convergence = (
            f"{median:.2f} s ({low:.2f}-{high:.2f})" if isinstance(median, float) else f"{s['timeouts']} timeouts"
        )
        rows.append(
            [
                str(s["phase"]),
                str(s["runs"]),
                convergence,
                f"<= {s['aim_s']:.0f} s" + (" met" if s["met"] else " **missed**"),
                " / ".join(f"{q:.2f}" for q in quantiles) + " s" if isinstance(quantiles, list) else "-",
                f"{retries[0]:,}-{retries[1]:,}",
                str(s["left_behind"]),
                *(
                    f"{b['median']:.2f} / {b['critical']:.2f}" if (b := breakdown.get(name)) else "-"
                    for name, _ in SEGMENTS
                ),
            ]
        )
    return rows


def print_summary(summary: list[dict[str, object]]) -> None:
    table = Table(title=f"Fleet rollout over {summary[0]['runs'] if summary else 0} runs, against the aims")
    for column in SUMMARY_COLUMNS:
        table.add_column(column)
    for cells in summary_cells(summary):
        table.add_row(*(c.replace(" **missed**", " [red]missed[/red]") for c in cells))
    console.print(table)


def run_records(runs: Sequence[Sequence[Phase]], per_gateway: int, loss: float) -> list[dict[str, object]]:
    """One record per phase per run, in the form twin/rollout_calibration.py reads."""
    out: list[dict[str, object]] = []
    for number, phases in enumerate(runs, 1):
        for p in phases:
            out.append(
                {
                    "phase": p.name,
                    "run": number,
                    "gateways": p.gateways,
                    "lamps_per_gateway": per_gateway,
                    "loss": loss if p.faulty else 0.0,
                    "restarts": len(p.restarted),
                    "convergence_s": None if p.seconds is None else round(p.seconds, 3),
                    "quantiles_s": [round(q, 3) for q in p.quantiles] or None,
                    "messages": p.messages,
                    "retries": p.retries,
                    "left_behind": p.left_behind,
                    "breakdown_s": p.breakdown(),
                    "cpu_s": p.cpu,
                    "canary": {"gateways": p.canary_gateways, "seconds": p.canary_s},
                }
            )
    return out


def record_runs(
    path: Path, runs: Sequence[Sequence[Phase]], per_gateway: int, loss: float, command: str, sim_processes: int
) -> Path:
    """The measured figures as ``bench-results/fleet.json`` (twin.bench_record): rows
    against the aims, the summary table, and in ``extra`` the per-run ``runs`` list
    (twin/rollout_calibration.py reads a copy of it, twin/data/fleet-measured.json) and the
    breakdown summary."""
    summary = summarise(runs)
    rows = []
    for s in summary:
        median = s["median_s"]
        rows.append(
            Row(
                what=f"rollout to {runs[0][0].lamps:,} lamps, {s['phase']}: all confirmed, median of {s['runs']} runs",
                figure=f"{median:.2f} s ({s['min_s']:.2f}-{s['max_s']:.2f})"
                if isinstance(median, float)
                else f"{s['timeouts']} of {s['runs']} runs timed out",
                aim=f"<= {s['aim_s']:.0f} s",
                met=bool(s["met"]),
                value=median if isinstance(median, float) else None,
                unit="s",
            )
        )
    return record(
        path.stem,
        title="Policy rollout to the fleet (just fleet)",
        command=command,
        rows=rows,
        columns=SUMMARY_COLUMNS,
        cells=summary_cells(summary),
        notes=f"{runs[0][0].gateways if runs and runs[0] else 30} gateway processes, {sim_processes} lamp-simulator "
        "processes, Mosquitto and the controller share the "
        "machine's cores; a lamp counts when it reports the new version. Breakdown: seconds per segment "
        "(centre publish, delivery, verify, store, apply, program writes, reports) for the median gateway "
        "and on the critical path, median over the runs.",
        extra={"runs": run_records(runs, per_gateway, loss), "summary": summary},
        results=path.parent,
    )
