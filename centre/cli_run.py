"""`centre run`: the district centre's process (ingest, retention, console, rollouts).

Owns: the ``run`` command: logging, the config, and the service until SIGTERM.
Must not import: the console or the rollout driver (the service starts them when installed).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from centre.config import load_centre_config
from edge_agent.cli.terminal import LazyConsole
from edge_agent.errors import ConfigError

err = LazyConsole(stderr=True)

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="The centre's TOML file (centre.toml).")]


def run(
    config: ConfigOption,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log every batch committed (the centre's debug log)."),
) -> None:
    """Run the centre: take what the gateways send north, serve the console, drive rollouts."""
    from centre.service import serve

    try:
        loaded = load_centre_config(config)
    except ConfigError as exc:
        _problems(exc)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if verbose:
        logging.getLogger("centre").setLevel(logging.DEBUG)
    try:
        asyncio.run(serve(loaded))
    except ConfigError as exc:
        _problems(exc)


def _problems(exc: ConfigError) -> NoReturn:
    """Every problem printed (as `centre migrate` does), and exit 2."""
    err.print(f"[red]{len(exc.problems)} problem(s) in the configuration:[/red]")
    for problem in exc.problems:
        err.print(f"  {problem}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(2)
