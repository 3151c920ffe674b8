"""``twin calibrate``: a scenario fitted to the gateways' own history, with intervals.

Owns: the command and its table; the fit is ``twin.calibrate``.
Must not import: edge_agent.agent/engine/transports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from edge_agent.errors import ConfigError
from twin.cli_common import console, err, load_or_exit


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
    lamp failures and repairs, motion, uplink outages, and from the notification ledger the
    channels' delivery delays and failures and each role's answer; each value with its interval."""
    from twin.calibrate import calibrate as fit
    from twin.calibrate.write import write_scenario

    loaded = load_or_exit(base)
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
    if "channels" in cal.notes:  # stores from gateways without the notification ledger
        console.print(f"note: {cal.notes['channels']}", markup=False, highlight=False)
    console.print(f"wrote {out} ({fitted.spec.scenario.name}) and {sidecar}")
