"""Reports: KPIs with confidence intervals over replications, plots, kpis.json and report.html.

Owns: aggregating replication results, the JSON written for machines (``kpis.json``), the HTML
for planners (``report.html`` with PNG plots beside it: the shares answered by a person within
60 s and 180 s per tier next to the telecare targets, then every KPI) and the side-by-side
comparison of two policies with a verdict per KPI. Matplotlib runs on the Agg backend (no
display needed).

Must not import: numba, simpy, twin.kernels, twin.sim.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from twin.kpis import ANSWER, ANSWER_TARGETS, describe, higher_is_better
from twin.stats import mean_ci, verdict


def aggregate(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """{kpi: {"mean", "ci95", "values"}} over replications (KPIs missing in some are NaN)."""
    names = sorted({k for r in results for k in r["kpis"]})
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        values = [float(r["kpis"].get(name, math.nan)) for r in results]
        mean, half = mean_ci(values)
        out[name] = {"mean": mean, "ci95": half, "values": values}
    return out


def _clean(x: float) -> float | None:
    return x if math.isfinite(x) else None


def write_kpis_json(path: Path, meta: dict[str, Any], table: dict[str, dict[str, Any]]) -> None:
    doc = {
        **meta,
        "kpis": {
            k: {
                "mean": _clean(v["mean"]),
                "ci95": _clean(v["ci95"]),
                "values": [_clean(x) for x in v["values"]],
                "description": describe(k),
            }
            for k, v in table.items()
        },
    }
    path.write_text(json.dumps(doc, indent=2, sort_keys=True))


def _save(fig: Any, out: Path, name: str, caption: str, files: list[tuple[str, str]]) -> None:
    """Write one figure beside the report, free it, and list it with its caption."""
    fig.tight_layout()
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    files.append((name, caption))


def _plots(out: Path, first: dict[str, Any]) -> list[tuple[str, str]]:
    d = first["details"]
    files: list[tuple[str, str]] = []
    # Energy by hour of night (luminaire energy above standby), noon to noon.
    hours = [(12 + h) % 24 for h in range(24)]
    by_hour = np.array(d["energy_wmin_by_hour"]) / 60_000.0
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.bar(range(24), [by_hour[h] for h in hours])
    ax.set_xticks(range(24), [f"{h:02d}" for h in hours], fontsize=7)
    ax.set_xlabel("local hour")
    ax.set_ylabel("kWh (whole horizon)")
    ax.set_title("Luminaire energy by hour of night")
    _save(fig, out, "energy_by_hour.png", "Energy by hour of night (replication 1)", files)
    # Response-time distributions by incident type.
    fig, ax = plt.subplots(figsize=(8, 3.5))
    response = d["response"]
    if response:
        names = sorted(response)
        ax.boxplot([response[n] for n in names], showfliers=False)
        ax.set_xticks(range(1, len(names) + 1), names)
    ax.set_yscale("log")
    ax.set_ylabel("minutes to responder on scene")
    ax.set_title("Response times by incident type")
    _save(fig, out, "response_times.png", "Response-time distributions (replication 1)", files)
    # Map of lamps and outages.
    fig, ax = plt.subplots(figsize=(6, 6))
    x = np.array(d["lamp_x"]) / 1000
    y = np.array(d["lamp_y"]) / 1000
    outage = np.array(d["lamp_outage_hours"])
    ax.scatter(x, y, s=2, c="0.7", label="lamp")
    hit = outage > 0
    sc = ax.scatter(x[hit], y[hit], s=10, c=outage[hit], cmap="Reds", label="lamp with outage")
    if hit.any():
        fig.colorbar(sc, ax=ax, label="outage hours")
    for rx, ry, _role in d["responders"]:
        ax.plot(rx / 1000, ry / 1000, "b+", ms=5)
    ax.set_aspect("equal")
    ax.set_xlabel("km east")
    ax.set_ylabel("km north")
    ax.set_title("Lamps, outages (red) and responders (+)")
    _save(fig, out, "map.png", "Map of lamps and outages (replication 1)", files)
    # Utilisation by role.
    fig, ax = plt.subplots(figsize=(8, 3.5))
    util = d["utilisation"]
    ax.bar(list(util), [100 * v for v in util.values()])
    ax.set_ylabel("% of on-shift time busy")
    ax.set_title("Responder utilisation")
    _save(fig, out, "utilisation.png", "Responder utilisation (replication 1)", files)
    return files


def _answer_tiers(table: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """(label, KPI suffix) of every tier with answer shares, all alerts first."""
    roles = sorted({m["role"] for name in table if (m := ANSWER.match(name)) and m["limit"] and m["role"]})
    tiers = [("all alerts", "")] if any(f"ack_within_{t}s" in table for t in ANSWER_TARGETS) else []
    return tiers + [(role, f"_{role}") for role in roles]


def _against_target(mean: float, half: float, target: float) -> str:
    half = half if math.isfinite(half) else 0.0
    if not math.isfinite(mean):
        return "-"
    if mean - half >= target:
        return "meets"
    return "below" if mean + half < target else "undecided"


def _answer_section(
    out: Path, table: dict[str, dict[str, Any]], files: list[tuple[str, str]], channels: dict[str, str]
) -> str:
    """The shares answered within 60 s / 180 s per tier against the targets, with the channels
    the policy notifies each tier by (``channels``: role -> text): a table and a plot."""
    tiers = _answer_tiers(table)
    if not tiers:
        return ""
    nan = {"mean": math.nan, "ci95": math.nan}
    rows = []
    for label, suffix in tiers:
        cells = []
        for limit, target in ANSWER_TARGETS.items():
            v = table.get(f"ack_within_{limit}s{suffix}", nan)
            cells.append(
                f"<td>{_pct(v['mean'])} &plusmn; {_pct(v['ci95'])}</td><td>{target:.1%}</td>"
                f"<td>{_against_target(v['mean'], v['ci95'], target)}</td>"
            )
        p50, p90 = (table.get(f"ack_p{q}_s{suffix}", nan)["mean"] for q in (50, 90))
        how = html.escape(channels.get(suffix[1:], "")) if suffix else ""
        rows.append(
            f"<tr><td>{html.escape(label)}</td><td>{how}</td>{''.join(cells)}<td>{_fmt(p50)}</td>"
            f"<td>{_fmt(p90)}</td></tr>"
        )
    fig, ax = plt.subplots(figsize=(8, 3.5))
    x = np.arange(len(tiers))
    for k, (limit, target) in enumerate(ANSWER_TARGETS.items()):
        values = [table.get(f"ack_within_{limit}s{suffix}", nan) for _, suffix in tiers]
        means = [100 * v["mean"] for v in values]
        halves = [100 * v["ci95"] if math.isfinite(v["ci95"]) else 0.0 for v in values]
        ax.bar(x + (k - 0.5) * 0.38, means, 0.38, yerr=halves, capsize=3, label=f"within {limit} s", color=f"C{k}")
        ax.axhline(100 * target, color=f"C{k}", ls="--", lw=1, label=f"target {target:.1%} within {limit} s")
    ax.set_xticks(x, [label for label, _ in tiers], fontsize=8)
    ax.set_ylabel("% answered by a person")
    ax.set_ylim(0, 101)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=4)
    ax.set_title("Answered by a person within 60 s / 180 s, per tier")
    _save(fig, out, "answered.png", "Answered within 60 s / 180 s per tier, mean and 95% CI", files)
    return (
        "<h2>Answered by a person</h2><p>Share answered within 60 s and within 180 s against the UK "
        "telecare targets (TSA / TEC Quality: 97.5% and 99%): for all alerts from raised to "
        "acknowledged, for a tier from each notification to that responder's acknowledgement (a "
        "notification never answered counts as not within). Channels: the policy's, by chain, each "
        "with its delay after the step starts (a delayed one only while unanswered); when every channel "
        "of a notification fails, the next responder is called at once. 'meets' and 'below': the whole "
        "95% interval is above or below the target.</p><table><tr><th>tier</th><th>channels</th>"
        "<th>within 60 s</th>"
        "<th>target</th><th></th><th>within 180 s</th><th>target</th><th></th><th>p50 s</th>"
        f"<th>p90 s</th></tr>{''.join(rows)}</table>"
        '<figure><img src="answered.png" alt="answered within 60 s and 180 s per tier"></figure>'
    )


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%" if math.isfinite(x) else "-"


def _fmt(x: float) -> str:
    if not math.isfinite(x):
        return "-"
    return f"{x:,.4g}" if abs(x) < 1e5 else f"{x:,.0f}"


def write_run_report(out: Path, meta: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """kpis.json, report.html and the PNG plots in ``out``; returns the KPI table."""
    out.mkdir(parents=True, exist_ok=True)
    table = aggregate(results)
    write_kpis_json(out / "kpis.json", meta, table)
    answers = _answer_section(out, table, [], meta.get("channels", {}))
    plots = _plots(out, results[0])
    rows = "\n".join(
        f"<tr><td>{html.escape(k)}</td><td>{_fmt(v['mean'])}</td><td>&plusmn; {_fmt(v['ci95'])}"
        f"</td><td>{html.escape(describe(k))}</td></tr>"
        for k, v in table.items()
    )
    images = "\n".join(
        f'<figure><img src="{f}" alt="{html.escape(c)}"><figcaption>{html.escape(c)}</figcaption></figure>'
        for f, c in plots
    )
    head = html.escape(
        f"{meta['scenario']} with policy {meta['policy']}: {meta['replications']} replications "
        f"of {meta['days']} nights, seed {meta['seed']}"
    )
    (out / "report.html").write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>twin report</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:auto}td{padding:2px 8px}"
        "tr:nth-child(even){background:#f3f3f3}img{max-width:100%}</style></head><body>"
        f"<h1>Twin report</h1><p>{head}</p><p>Means with 95% confidence half-widths over "
        f"replications (Student t).</p>{answers}<h2>KPIs</h2><table><tr><th>KPI</th><th>mean</th><th>95% CI</th>"
        f"<th>meaning</th></tr>{rows}</table>{images}</body></html>"
    )
    return table


def compare_tables(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per KPI: A and B mean and CI, and B's verdict against A."""
    rows = []
    for name in sorted(set(a) | set(b)):
        va = a.get(name, {"mean": math.nan, "ci95": math.nan, "values": []})
        vb = b.get(name, {"mean": math.nan, "ci95": math.nan, "values": []})
        rows.append(
            {
                "kpi": name,
                "a_mean": _clean(va["mean"]),
                "a_ci95": _clean(va["ci95"]),
                "b_mean": _clean(vb["mean"]),
                "b_ci95": _clean(vb["ci95"]),
                "verdict": verdict(va["values"], vb["values"], higher_is_better(name)),
            }
        )
    return rows


def write_compare_report(out: Path, meta: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps({**meta, "kpis": rows}, indent=2))

    def cell(m: float | None, h: float | None) -> str:
        return f"{_fmt(m if m is not None else math.nan)} &plusmn; {_fmt(h if h is not None else math.nan)}"

    body = "\n".join(
        f"<tr><td>{html.escape(r['kpi'])}</td><td>{cell(r['a_mean'], r['a_ci95'])}</td>"
        f"<td>{cell(r['b_mean'], r['b_ci95'])}</td><td>{r['verdict']}</td></tr>"
        for r in rows
    )
    (out / "report.html").write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>twin compare</title></head>"
        f"<body><h1>{html.escape(meta['scenario'])}: B = {html.escape(meta['policy_b'])} "
        f"against A = {html.escape(meta['policy_a'])}</h1><p>Verdict: Welch t-test at 95% over "
        "replications with common seeds.</p><table><tr><th>KPI</th><th>A</th><th>B</th>"
        f"<th>B vs A</th></tr>{body}</table></body></html>"
    )
