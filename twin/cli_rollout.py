"""``twin rollout``: the policy rollout model over replications, its table, JSON and plot.

Owns: the command and its report (DIR/rollout.json, DIR/rollout.png); the model is
``twin.rollout``, its calibrations ``twin.rollout_calibration``.
Must not import: edge_agent.agent/engine/transports.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
import typer
from rich.table import Table

from twin.cli_common import OutOpt, console, err


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

    from twin.rollout import aggregate, params_dict, replicate
    from twin.rollout_calibration import configure

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
