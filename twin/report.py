"""Reports: KPIs with confidence intervals over replications, plots, kpis.json and report.html.

Owns: aggregating replication results, the JSON written for machines (``kpis.json``), the HTML
for planners (``report.html`` with PNG plots beside it) and the side-by-side comparison of two
policies with a verdict per KPI. Matplotlib runs on the Agg backend (no display needed).

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

from twin.kpis import describe, higher_is_better
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


def _fmt(x: float) -> str:
    if not math.isfinite(x):
        return "-"
    return f"{x:,.4g}" if abs(x) < 1e5 else f"{x:,.0f}"


def write_run_report(out: Path, meta: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """kpis.json, report.html and the PNG plots in ``out``; returns the KPI table."""
    out.mkdir(parents=True, exist_ok=True)
    table = aggregate(results)
    write_kpis_json(out / "kpis.json", meta, table)
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
        f"replications (Student t).</p><table><tr><th>KPI</th><th>mean</th><th>95% CI</th>"
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
