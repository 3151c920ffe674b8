"""`centre user add|list|remove`: the console's accounts.

Owns: the ``user`` command group (the password from a prompt, typed twice, or the first line of
``--password-file``). The accounts themselves are centre/console/auth.py's.
Must not import: the service, the console's server.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from centre.cli_common import load, open_db
from centre.console import auth
from centre.db import Database
from edge_agent.cli.terminal import LazyConsole

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="The centre's TOML file (centre.toml).")]
console = LazyConsole()
err = LazyConsole(stderr=True)

app = typer.Typer(help="The console's accounts: operators (may acknowledge) and viewers.", no_args_is_help=True)


def _open(config: Path) -> Database:
    return open_db(load(config))


def _password(password_file: Path | None) -> str:
    if password_file is None:
        return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))
    try:
        lines = password_file.read_text().splitlines()
    except OSError as exc:
        err.print(f"--password-file {password_file}: cannot read it: {exc.strerror}", markup=False, soft_wrap=True)
        raise typer.Exit(2) from None
    return lines[0] if lines else ""


@app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="The user name to sign in with.")],
    config: ConfigOption,
    role: Annotated[str, typer.Option("--role", help="operator (may acknowledge) or viewer (read-only).")] = "viewer",
    password_file: Annotated[
        Path | None, typer.Option("--password-file", help="Read the password from this file's first line.")
    ] = None,
) -> None:
    """Create an account, or set a new password and role for an existing one (its sessions end)."""
    if role not in auth.ROLES:
        err.print(f"--role {role!r}: expected one of {', '.join(auth.ROLES)}", markup=False, soft_wrap=True)
        raise typer.Exit(2)
    password = _password(password_file)
    with _open(config) as db:
        try:
            created = auth.add_user(db, name, password, role)
        except auth.AuthError as exc:
            err.print(f"not saved: {exc}", markup=False, soft_wrap=True)
            raise typer.Exit(2) from None
    console.print(f"[green]ok[/green] {'added' if created else 'updated'} {name} ({role})")


@app.command("list")
def list_(config: ConfigOption) -> None:
    """Every account, its role and when it was made."""
    with _open(config) as db:
        users = auth.list_users(db)
    if not users:
        console.print("no accounts: `centre user add NAME --role operator -c centre.toml`")
        return
    for name, role, created in users:
        when = datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%d %H:%M UTC")
        console.print(f"{name:<24} {role:<9} {when}", markup=False, highlight=False)


@app.command("remove")
def remove(name: Annotated[str, typer.Argument(help="The account to delete.")], config: ConfigOption) -> None:
    """Delete an account; its sessions end at once."""
    with _open(config) as db:
        if not auth.remove_user(db, name):
            err.print(f"no account named {name!r}", markup=False, soft_wrap=True)
            raise typer.Exit(1)
    console.print(f"[green]ok[/green] removed {name}")
