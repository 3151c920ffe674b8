"""`centre rollout`: start a rollout in waves and follow it; its status; abort it.

Owns: the ``rollout`` command's four forms::

    centre rollout BUNDLE -c centre.toml [--canary 2] [--waves 10%,50%,100%] [--abort-if RULE]
                   [--window 22:00-05:00] [--tz Asia/Shanghai] [--timeout 10m] [--gateways a,b,c]
                   [--detach | --drive]
    centre rollout status [ID] -c centre.toml      (the newest rollout when no ID)
    centre rollout follow [ID] -c centre.toml [--drive]   (a rollout left running, e.g. after Ctrl-C)
    centre rollout abort ID -c centre.toml

Starting stores the signed bundle (checked: it must parse as a signed envelope) in
``policy_versions``, creates the rollout and its targets (``--gateways``, or every gateway in the
``gateways`` table), then FOLLOWS it with a progress bar (per-state counts) until it ends: exit 0
when it succeeded, 1 when it was aborted or ended incomplete (the reason printed), 2 on bad input. ``--detach``
returns at once. Who moves it on: a running ``centre run`` (its rollout driver) by default; with
``--drive`` this process is the centre until the rollout ends (the ingest and the rollout driver,
its own MQTT link from ``[broker]``, client id ``<id>-rollout``, session kept 60 s), the
one-command path for a district without a centre service (next to a running ``centre run`` it is
harmless but redundant: publishes are retained and idempotent, ingest de-duplicates). When
nothing moves a new rollout for 5 s, the follower says so.
Must not import: the console.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from centre.cli_common import load, open_db
from centre.db import Database
from centre.rollout import ACTIVE, INCOMPLETE, QUEUED, ROLLOUT_SUCCEEDED, TARGET_STATES, PlanError, make_plan
from centre.rollout_driver import RolloutError, Status, abort_rollout, counts_line, create_rollout, rollout_status
from edge_agent.cli.terminal import LazyConsole

if TYPE_CHECKING:
    from centre.config import CentreConfig
    from centre.db import Database

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="The centre's TOML file (centre.toml).")]
console = LazyConsole()
err = LazyConsole(stderr=True)
FOLLOW_POLL_S = 0.25
IDLE_HINT_S = 5.0


def rollout(
    what: Annotated[
        list[str], typer.Argument(help="BUNDLE (a signed bundle file), or `status [ID]`, `follow [ID]`, `abort ID`.")
    ],
    config: ConfigOption,
    canary: Annotated[int, typer.Option(help="Gateways in the canary wave (wave 0); 0: none.")] = 1,
    waves: Annotated[str, typer.Option(help="Cumulative shares after the canary: 10%,50%,100% or 5,20,100%.")] = "100%",
    abort_if: Annotated[
        str, typer.Option("--abort-if", help="e.g. 'rejected > 0 or timed_out > 10% after 5'; '' never aborts.")
    ] = "rejected > 0",
    window: Annotated[str | None, typer.Option(help="Start waves only between HH:MM-HH:MM local time.")] = None,
    tz: Annotated[str, typer.Option(help="The district's time zone for --window.")] = "Asia/Shanghai",
    timeout: Annotated[
        str | None, typer.Option(help="Per gateway (default: rollout.gateway_timeout in centre.toml).")
    ] = None,
    gateways: Annotated[str | None, typer.Option(help="a,b,c (default: every gateway the centre knows).")] = None,
    detach: Annotated[bool, typer.Option("--detach", help="Create the rollout and return at once.")] = False,
    drive: Annotated[bool, typer.Option("--drive", help="Drive it in this process (no `centre run` needed).")] = False,
) -> None:
    """Roll a signed policy bundle out in waves (canary first), or show / abort a rollout."""
    loaded = load(config)
    if what[0] == "status" and len(what) <= 2:
        with _open(loaded) as db:
            status = rollout_status(db, what[1] if len(what) == 2 else None)
        if status is None:
            err.print("no such rollout" if len(what) == 2 else "no rollout yet")
            raise typer.Exit(1)
        _print_status(status)
        raise typer.Exit(0 if status.state not in ("aborted", INCOMPLETE) else 1)
    if what[0] == "follow" and len(what) <= 2:
        with _open(loaded) as db:
            found = rollout_status(db, what[1] if len(what) == 2 else None)
            if found is None:
                err.print("no such rollout" if len(what) == 2 else "no rollout yet")
                raise typer.Exit(1)
            final = _run_follow(loaded, db, found.rollout_id, drive=drive)
        _print_status(final)
        raise typer.Exit(0 if final.state == ROLLOUT_SUCCEEDED else 1)
    if what[0] == "abort":
        if len(what) != 2:
            err.print("usage: centre rollout abort ID")
            raise typer.Exit(2)
        with _open(loaded) as db:
            try:
                abort_rollout(db, what[1], time.time())
            except RolloutError as exc:
                err.print(f"[red]{exc}[/red]")
                raise typer.Exit(1) from None
        err.print(f"rollout {what[1]} aborted; queued and in-progress gateways canceled")
        return
    if len(what) != 1:
        err.print("usage: centre rollout BUNDLE [options] | status [ID] | follow [ID] | abort ID")
        raise typer.Exit(2)
    if detach and drive:
        err.print("--detach and --drive: choose one")
        raise typer.Exit(2)
    bundle_path = Path(what[0])
    try:
        envelope = bundle_path.read_bytes()
    except OSError as exc:
        err.print(f"[red]BUNDLE {bundle_path}: cannot read it: {exc.strerror}[/red]")
        raise typer.Exit(2) from None
    try:
        plan = make_plan(
            canary=canary,
            waves=waves,
            abort_if=abort_if,
            window=window,
            timeout=timeout if timeout is not None else loaded.file.rollout.gateway_timeout,
            tz=tz,
        )
    except PlanError as exc:
        err.print(f"[red]{exc}[/red]", markup=True, highlight=False)
        raise typer.Exit(2) from None
    with _open(loaded) as db:
        if gateways is not None:
            targets = [g.strip() for g in gateways.split(",") if g.strip()]
        else:
            targets = [str(row[0]) for row in db.query("SELECT gateway FROM gateways ORDER BY gateway")]
        try:
            rollout_id = create_rollout(
                db, envelope, targets, plan, time.time(), name=bundle_path.name, district=loaded.file.centre.district
            )
        except RolloutError as exc:
            err.print(f"[red]BUNDLE {bundle_path}: {exc}[/red]", highlight=False)
            raise typer.Exit(2) from None
        status = rollout_status(db, rollout_id)
        assert status is not None
        sizes = [sum(1 for t in status.targets if t[1] == w) for w in range(status.waves)]
        err.print(
            f"rollout [bold]{rollout_id}[/bold]: version {status.version} to {len(targets)} gateways, waves {sizes}"
        )
        if detach:
            print(rollout_id)
            return
        final = _run_follow(loaded, db, rollout_id, drive=drive)
    _print_status(final)
    raise typer.Exit(0 if final.state == ROLLOUT_SUCCEEDED else 1)


def _open(loaded: CentreConfig) -> Database:
    return open_db(loaded)


def _run_follow(loaded: CentreConfig, db: Database, rollout_id: str, *, drive: bool) -> Status:
    """Follow (and with ``drive`` drive) until it ends; Ctrl-C leaves it running in the database."""
    try:
        return asyncio.run(_follow_and_drive(loaded, db, rollout_id, drive=drive))
    except KeyboardInterrupt:
        err.print(
            f"\nrollout {rollout_id} left as it is: `centre run` moves it on, or `centre rollout follow {rollout_id}"
            " --drive`; `centre rollout abort` stops it"
        )
        raise typer.Exit(130) from None


async def _follow_and_drive(loaded: CentreConfig, db: Database, rollout_id: str, *, drive: bool) -> Status:
    if not drive:
        return await follow(db, rollout_id)
    service = driving_service(loaded)
    task = asyncio.ensure_future(service.run())
    try:
        return await follow(db, rollout_id, driving=task)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


async def follow(db: Database, rollout_id: str, *, driving: asyncio.Future[Any] | None = None) -> Status:
    """A progress bar until the rollout ends; its last status."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    started = time.monotonic()
    hinted = False
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[counts]}"),
        console=Console(stderr=True),
    ) as progress:
        bar = progress.add_task(rollout_id, total=None, counts="")
        while True:
            status = await asyncio.to_thread(rollout_status, db, rollout_id)
            assert status is not None
            done = sum(n for s, n in status.counts.items() if s not in (QUEUED, "IN_PROGRESS"))
            progress.update(
                bar,
                total=len(status.targets),
                completed=done,
                description=f"{rollout_id} wave {status.wave}/{status.waves - 1} {status.state}",
                counts=counts_line(status.counts),
            )
            if status.state not in ACTIVE:
                return status
            if driving is not None and driving.done():
                exc = driving.exception() if not driving.cancelled() else None
                raise RolloutError(f"the in-process centre stopped: {exc!r}")
            if (
                not hinted
                and driving is None
                and status.counts.get(QUEUED, 0) == len(status.targets)
                and time.monotonic() - started > IDLE_HINT_S
                and status.state != "waiting_window"
            ):
                hinted = True
                progress.console.print(
                    "[yellow]nothing has moved this rollout yet: is `centre run` running? "
                    "(Ctrl-C leaves it to the centre; `--drive` drives it from here)[/yellow]"
                )
            await asyncio.sleep(FOLLOW_POLL_S)


def driving_service(loaded: CentreConfig) -> Any:
    """The centre's service (ingest + rollout driver, no console) under client id ``<id>-rollout``."""
    import msgspec

    from centre.config import CentreConfig
    from centre.rollout_driver import drive_rollouts
    from centre.service import CentreService

    class DrivingService(CentreService):
        """`--drive`: the centre's service with the rollout driver only."""

        def _optional_tasks(self, db: Database) -> list[tuple[str, Any]]:
            return [("rollouts", drive_rollouts(self.config, db, self.publish, self.clock))]

    section = msgspec.structs.replace(loaded.file.centre, id=f"{loaded.file.centre.id}-rollout")
    # a short-lived process: the broker keeps its session a minute, not a week of queued telemetry
    broker = msgspec.structs.replace(loaded.file.broker, session_expiry=60)
    config = CentreConfig(file=msgspec.structs.replace(loaded.file, centre=section, broker=broker), path=loaded.path)
    return DrivingService(config)


def _print_status(status: Status) -> None:
    from rich.table import Table

    colour = {"succeeded": "green", "aborted": "red", "incomplete": "red"}.get(status.state, "yellow")
    console.print(
        f"rollout [bold]{status.rollout_id}[/bold] version {status.version}: "
        f"[{colour}]{status.state}[/{colour}] (wave {status.wave} of {status.waves - 1}; wave 0 is the canary)"
    )
    if status.reason:
        console.print(f"  reason: {status.reason}", markup=False, highlight=False)
    table = Table("gateway", "wave", "state", "detail")
    for gateway, wave, state, detail in status.targets:
        table.add_row(gateway, str(wave), state, detail or "")
    console.print(table)
    console.print("  " + "  ".join(f"{s}={status.counts.get(s, 0)}" for s in TARGET_STATES))
