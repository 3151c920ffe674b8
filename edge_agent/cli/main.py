"""`edge-agent`: run a gateway, check its config, read its traces and alerts.

Owns: the ``edge-agent`` app and its own commands; the groups ``policy``, ``shadow`` and ``talq``
are their modules' (this package). Each command is a thin shell over the agent, config and store.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from edge_agent.cli.policy import policy_app
from edge_agent.cli.shadow import shadow_app
from edge_agent.cli.talq import talq_app
from edge_agent.cli.terminal import LazyConsole
from edge_agent.config import GatewayConfig, load_config
from edge_agent.errors import ConfigError

app = typer.Typer(
    help="Gateway agent for street lamps, village cameras and home-care wearables.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(policy_app, name="policy")
app.add_typer(shadow_app, name="shadow")
app.add_typer(talq_app, name="talq")
console = LazyConsole()
err = LazyConsole(stderr=True)

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="The gateway's TOML file.", exists=False)]


def _load(path: Path) -> GatewayConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        err.print(f"[red]{len(exc.problems)} problem(s) in the configuration:[/red]")
        for problem in exc.problems:
            err.print(f"  {problem}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


@app.command()
def check(config: ConfigOption) -> None:
    """Validate a gateway config and its policy; print every problem; exit 2 if any."""
    loaded = _load(config)
    gw = loaded.file
    console.print(
        f"[green]ok[/green] {config}: gateway {loaded.id}, {len(gw.lamps)} lamps, {len(gw.cameras)} cameras, "
        f"{len(gw.wearables)} wearables, {len(gw.responders)} responders; policy "
        f"{loaded.policy.policy.name} ({len(loaded.policy.rules)} rules, sha256 {loaded.policy.sha256[:12]})"
    )


@app.command()
def run(
    config: ConfigOption,
    speed: Annotated[float, typer.Option(help="Timeline seconds per real second (1 = real time).")] = 1.0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at debug level.")] = False,
) -> None:
    """Run the gateway agent until interrupted (Ctrl-C)."""
    from edge_agent.agent.app import run_agent
    from edge_agent.clock import ScaledClock

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    loaded = _load(config)
    try:
        asyncio.run(run_agent(loaded, ScaledClock(speed=speed)))
    except KeyboardInterrupt:
        console.print("stopped")


def _store(config: Path):  # type: ignore[no-untyped-def]
    from edge_agent.store.db import Store

    loaded = _load(config)
    path = loaded.data_dir / "gateway.sqlite3"
    if not path.exists():
        err.print(f"[red]no state yet at {path}[/red]: run the agent first (edge-agent run -c {config})")
        raise typer.Exit(1)
    return Store(path)


@app.command()
def traces(
    config: ConfigOption,
    rule: Annotated[str | None, typer.Option(help="Only this rule's traces.")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON, one trace per line.")] = False,
) -> None:
    """List the last rule runs: trigger, condition and result, actions, duration."""
    store = _store(config)
    found = store.rule_traces.recent(rule, limit)
    if as_json:
        for trace in found:
            sys.stdout.write(json.dumps(trace) + "\n")
        return
    from rich.table import Table

    table = Table(title=f"Last {len(found)} rule runs")
    for column in ("time", "rule", "trigger", "condition", "actions", "µs"):
        table.add_column(column)
    for trace in found:
        cond = trace.get("condition")
        cond_text = (
            "-"
            if not cond
            else f"{cond['if']} -> {cond['result']}" + (f" ({cond['reason']})" if cond.get("reason") else "")
        )
        table.add_row(
            datetime.fromtimestamp(trace["ts"]).strftime("%m-%d %H:%M:%S"),
            trace["rule"],
            json.dumps(trace["trigger"]),
            cond_text,
            "; ".join(trace["actions"]) or "(none)",
            str(trace["duration_us"]),
        )
    console.print(table)


@app.command()
def alerts(
    config: ConfigOption,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
) -> None:
    """List the alerts recorded on this gateway (kept even while the uplink is down)."""
    store = _store(config)
    from rich.table import Table

    table = Table(title="Alerts")
    for column in ("raised", "priority", "device", "message", "status", "responder"):
        table.add_column(column)
    for alert in store.alerts.newest(limit):
        table.add_row(
            datetime.fromtimestamp(alert.created).strftime("%m-%d %H:%M:%S"),
            str(alert.priority),
            alert.device,
            alert.message,
            alert.status,
            alert.responder or "-",
        )
    console.print(table)


@app.command()
def counters(config: ConfigOption) -> None:
    """Counters a gateway keeps: rejected messages by reason, evicted telemetry, and the
    outbox messages a broker refused (kept and retried), by reason."""
    store = _store(config)
    from rich.table import Table

    table = Table(title="Counters")
    table.add_column("name")
    table.add_column("value", justify="right")
    for name, value in sorted(store.counters.all().items()):
        if not name.startswith("seq."):
            table.add_row(name, str(value))
    for reason, count in sorted(store.outbox.refused().items()):
        table.add_row(f"outbox.refused.{reason}", str(count))
    console.print(table)


@app.command("acl")
def acl_command(
    side: Annotated[
        str, typer.Option(help="north: the city broker's ACL; south: this gateway's village broker's (needs -c).")
    ],
    config: Annotated[Path | None, typer.Option("--config", "-c", help="The gateway's TOML file (south).")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write it here (atomically).")] = None,
    users: Annotated[bool, typer.Option("--users", help="List the password-file users instead.")] = False,
) -> None:
    """Generate a Mosquitto ACL from the topic registry (deploy/README.md)."""
    from edge_agent.cli.acl import main as acl_main

    argv = ["--side", side, *(["-c", str(config)] if config else []), *(["-o", str(output)] if output else [])]
    raise typer.Exit(acl_main([*argv, *(["--users"] if users else [])]))


rollout_app = typer.Typer(help="Policy rollout on this gateway's lamps.", no_args_is_help=True)
app.add_typer(rollout_app, name="rollout")


@rollout_app.command("status")
def rollout_status(
    config: ConfigOption,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Which lamps report which policy version; lamps that lag behind and since when.

    Reads the devices' reported state in the store, so it works while the agent runs or after.
    """
    from edge_agent.store.policy_store import PolicyStore

    loaded = _load(config)
    store = _store(config)
    active = PolicyStore(store.path).active("policy")
    version = active.version if active is not None else 0
    device_state = store.device_state.all()
    lamps = [lamp.id for lamp in loaded.file.lamps]
    by_version: dict[str, int] = {}
    stuck: list[tuple[str, str]] = []
    for lamp in lamps:
        reported = device_state.get(lamp, ({}, {}))[1]
        seen = reported.get("policy_version")
        by_version[str(seen)] = by_version.get(str(seen), 0) + 1
        if seen != version:
            why = "never reported" if not reported else f"reports version {seen}"
            stuck.append((lamp, why))
    if as_json:
        sys.stdout.write(
            json.dumps(
                {
                    "gateway": loaded.id,
                    "policy_version": version,
                    "lamps": len(lamps),
                    "by_version": by_version,
                    "stuck": dict(stuck),
                }
            )
            + "\n"
        )
        return
    console.print(
        f"gateway {loaded.id}: active policy version {version}"
        + (
            f" ({active.payload_sha256[:12]}, accepted {datetime.fromtimestamp(active.accepted_at):%Y-%m-%d %H:%M})"
            if active
            else " (the config's policy file)"
        )
    )
    console.print(f"{len(lamps) - len(stuck)}/{len(lamps)} lamps confirm it; by reported version: {by_version}")
    if stuck:
        from rich.table import Table

        table = Table(title="Lamps not on the active version")
        table.add_column("lamp")
        table.add_column("why")
        for lamp, why in stuck:
            table.add_row(lamp, why)
        console.print(table)


def main() -> None:
    app()
