"""What the ``twin`` commands share: the consoles, ``--out``, loading inputs with exit codes.

Owns: the CLI's conventions. Errors in scenario or policy files are printed with file and key
path and exit with status 2 (``load_or_exit``).
Must not import: edge_agent.agent/engine/transports, the command modules (cli_scenario, cli_bench, ...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from edge_agent.errors import ConfigError
from twin.scenario import load_scenario

console = Console()
err = Console(stderr=True)

OutOpt = Annotated[Path, typer.Option("--out", help="Output directory (created).")]


def load_or_exit(path: Path, policy: Path | None = None) -> Any:
    """The scenario (with ``policy`` instead of its own), or its problems printed and exit 2."""
    try:
        return load_scenario(path, policy)
    except ConfigError as exc:
        err.print(f"[red]invalid input[/red] ({len(exc.problems)} problem(s)):")
        for problem in exc.problems:
            err.print(f"  {problem}", markup=False, highlight=False)
        raise typer.Exit(2) from None
