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
    stores: Annotated[
        list[Path] | None, typer.Argument(help="Gateway stores (gateway.sqlite3), one or more; or --centre.")
    ] = None,
    *,
    out: Annotated[Path, typer.Option("--out", help="The fitted scenario to write (TOML; plus OUT.fit.json).")],
    base: Annotated[
        Path, typer.Option("--base", help="The district's scenario: site, district, responders, policy.")
    ] = Path("scenarios/naxi-3000.toml"),
    level: Annotated[float, typer.Option(help="Confidence level of the intervals.")] = 0.95,
    until: Annotated[float | None, typer.Option(help="End of the observation (epoch s; default: last record).")] = None,
    centre: Annotated[
        str | None,
        typer.Option("--centre", help="Read the history from the district centre's database (its URL) instead."),
    ] = None,
    district: Annotated[str, typer.Option(help="The district the centre serves (with --centre).")] = "naxi",
) -> None:
    """Fit a scenario to the gateways' own history: incident rates by hour and kind, ack delays,
    lamp failures and repairs, motion, uplink outages, and from the notification ledger the
    channels' delivery delays and failures and each role's answer; each value with its interval.
    With ``--centre DSN``: the same history as the gateways shipped it to the district centre
    (their ``history`` messages, stored by the centre), every gateway there, the same fit."""
    from twin.calibrate import calibrate as fit
    from twin.calibrate import fit_histories
    from twin.calibrate.write import write_scenario

    if bool(stores) == (centre is not None):
        err.print("give either gateway stores or --centre DSN (one of them)")
        raise typer.Exit(2)
    loaded = load_or_exit(base)
    try:
        if centre is not None:
            from twin.calibrate.centre import read_centre

            cal = fit_histories(read_centre(centre, district, until), loaded, level=level)
            source = f"the centre of {district}, {len(cal.gateways)} gateway(s)"
        else:
            cal = fit(list(stores or []), loaded, until=until, level=level)
            source = f"{len(cal.gateways)} store(s)"
        fitted, sidecar = write_scenario(cal, loaded, out)
    except ConfigError as exc:
        for problem in exc.problems:
            err.print(f"  {problem}", markup=False, highlight=False)
        raise typer.Exit(2) from None
    view = Table(title=f"calibrated from {source}, {cal.days:.1f} gateway-days ({level:.0%} CIs)")
    for col in ("parameter", "fitted", "interval", "n"):
        view.add_column(col)
    for key, e in cal.estimates.items():
        view.add_row(key, f"{e.value:.4g}", f"{e.lo:.4g} - {e.hi:.4g}", str(e.n))
    console.print(view)
    if "channels" in cal.notes:  # stores from gateways without the notification ledger
        console.print(f"note: {cal.notes['channels']}", markup=False, highlight=False)
    console.print(f"wrote {out} ({fitted.spec.scenario.name}) and {sidecar}")
