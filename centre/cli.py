"""`centre`: run the district centre, manage its database, operators and rollouts.

Owns: the ``centre`` app and ``centre migrate`` (config loading: centre/cli_common.py).
Each other command lives with what it drives: ``run`` (centre/cli_run.py), ``user``
(centre/cli_users.py), ``rollout`` (centre/cli_rollout.py).
"""

from __future__ import annotations

import typer

from centre import cli_rollout, cli_run, cli_users
from centre.cli_common import ConfigOption, console, load, open_db
from centre.db import schema_version

app = typer.Typer(
    help="The district centre: every gateway on one screen, policies rolled out in waves, history for the twin.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _group() -> None:
    """The district centre (``centre COMMAND --help`` for each command)."""


@app.command()
def migrate(config: ConfigOption) -> None:
    """Create the database schema or bring it up to date (`centre run` does this too)."""
    loaded = load(config)
    with open_db(loaded) as db:
        console.print(f"[green]ok[/green] {loaded.database_url}: schema version {schema_version(db)}")


app.command("run")(cli_run.run)
app.command("rollout")(cli_rollout.rollout)
app.add_typer(cli_users.app, name="user")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
