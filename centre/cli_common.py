"""What every `centre` command shares: the ``--config`` option, the terminals, and loading the
centre file (or printing every problem and exiting 2).

Owns: ``ConfigOption``, ``console``, ``err``, ``load``, ``problems``, ``open_db``. Must not import: the other
cli modules (they all import this one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer

from centre.config import CentreConfig, load_centre_config
from centre.db import Database, open_database
from edge_agent.cli.terminal import LazyConsole
from edge_agent.errors import ConfigError

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="The centre's TOML file (centre.toml).")]
console = LazyConsole()
err = LazyConsole(stderr=True)


def problems(exc: ConfigError) -> NoReturn:
    """Print every problem of ``exc`` and exit 2."""
    err.print(f"[red]{len(exc.problems)} problem(s) in the configuration:[/red]")
    for problem in exc.problems:
        err.print(f"  {problem}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def load(path: Path) -> CentreConfig:
    """The validated centre file, or every problem printed and exit 2."""
    try:
        return load_centre_config(path)
    except ConfigError as exc:
        problems(exc)


def open_db(loaded: CentreConfig) -> Database:
    """The centre's database (schema brought up to date), or its problem printed and exit 2."""
    try:
        return open_database(loaded.database_url)
    except ConfigError as exc:
        problems(exc)
