"""`centre`: run the district centre, manage its database, operators and rollouts.

Owns: the ``centre`` app, config loading with readable errors (``load``), and ``centre migrate``.
Each other command lives with what it drives: ``run`` (centre/cli_run.py), ``user``
(centre/cli_users.py), ``rollout`` (centre/cli_rollout.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from centre import cli_rollout, cli_run, cli_users
from centre.config import CentreConfig, load_centre_config
from centre.db import open_database, schema_version
from edge_agent.cli.terminal import LazyConsole
from edge_agent.errors import ConfigError

app = typer.Typer(
    help="The district centre: every gateway on one screen, policies rolled out in waves, history for the twin.",
    no_args_is_help=True,
    add_completion=False,
)
console = LazyConsole()
err = LazyConsole(stderr=True)


@app.callback()
def _group() -> None:
    """The district centre (``centre COMMAND --help`` for each command)."""


ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="The centre's TOML file (centre.toml).")]


def load(path: Path) -> CentreConfig:
    """The validated centre file, or every problem printed and exit 2."""
    try:
        return load_centre_config(path)
    except ConfigError as exc:
        err.print(f"[red]{len(exc.problems)} problem(s) in the configuration:[/red]")
        for problem in exc.problems:
            err.print(f"  {problem}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


@app.command()
def migrate(config: ConfigOption) -> None:
    """Create the database schema or bring it up to date (`centre run` does this too)."""
    loaded = load(config)
    try:
        db = open_database(loaded.database_url)
    except ConfigError as exc:
        for problem in exc.problems:
            err.print(f"  {problem}", markup=False, highlight=False)
        raise typer.Exit(2) from None
    with db:
        console.print(f"[green]ok[/green] {loaded.database_url}: schema version {schema_version(db)}")


app.command("run")(cli_run.run)
app.command("rollout")(cli_rollout.rollout)
app.add_typer(cli_users.app, name="user")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
