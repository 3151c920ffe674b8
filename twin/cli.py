"""The ``twin`` command: run, compare, validate scenarios; benchmark the kernels; model rollouts.

Owns: the command tree (which command lives where) and the entry point (``twin``,
``python -m twin.cli``). The commands live in their groups: ``twin.cli_scenario`` (run, compare,
validate, kpis), ``twin.cli_bench`` (bench, warm), ``twin.cli_rollout`` (rollout),
``twin.cli_calibrate`` (calibrate); what they share (consoles, options, exit codes) in
``twin.cli_common``.
Must not import: edge_agent.agent/engine/transports.
"""

from __future__ import annotations

import typer

from twin.cli_bench import bench, warm
from twin.cli_calibrate import calibrate
from twin.cli_rollout import rollout
from twin.cli_scenario import compare, kpis, run, validate

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="District digital twin: lighting (Numba), incidents and dispatch (SimPy), one policy.",
)
for command in (run, compare, validate, bench, warm, kpis, rollout, calibrate):
    app.command()(command)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
