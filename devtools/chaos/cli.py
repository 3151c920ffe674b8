"""`python -m devtools.chaos` (`just chaos`): the plan, the run, the table.

Owns: the command line (``--quick``, ``--kills``, ``--only``, ``--seed``, ``--keep``,
``--deadline``, ``--results``), the plan of each variant, running the chosen scenarios one after
another (each under a deadline; one that cannot finish is a failed row, not a crash), the table,
and recording the rows into ``bench-results/chaos.json`` (``record``: merged by letter, so a run
of ``--only i`` keeps the other rows). Exit code 1 if anything was lost or a check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from devtools.chaos import record
from devtools.chaos.command_kills import command_kills
from devtools.chaos.crash import PowerCut
from devtools.chaos.dongle_kills import dongle_kills
from devtools.chaos.faults import agent_kills, broker_restarts, publish_drops, uplink_outage
from devtools.chaos.harness import LAYOUT_NOTES
from devtools.chaos.policy_cuts import policy_cuts
from devtools.chaos.refusals import denied_publish, locked_store
from devtools.chaos.scenario import Row
from devtools.chaos.serial import serial_vanish
from devtools.chaos.sms_kills import sms_kills

DESCRIPTION = "`just chaos`: fault injection against a real gateway process and real Mosquitto brokers."
console = Console(width=None if sys.stdout.isatty() else 200)


def render(rows: list[Row], title: str) -> Table:
    table = Table(title=title)
    columns = ("fault", "injections", "sent", "delivered", "lost", "duplicates", "time to drain")
    table.caption = "every row: " + "; ".join(LAYOUT_NOTES)
    for name in (*columns, "first alert after reconnect", "checks", "special settings"):
        table.add_column(name, justify="left" if name in ("fault", "checks", "special settings") else "right")
    for r in rows:
        checks = "; ".join([*(f"[red]FAIL {f}[/red]" for f in r.failures), *r.notes])
        table.add_row(
            r.fault,
            str(r.injections),
            str(r.sent),
            str(r.delivered),
            f"[red]{r.lost}[/red]" if r.lost else "0",
            str(r.duplicates),
            "-" if r.drain_s is None else f"{r.drain_s:.1f} s",
            "-" if r.first_alert_s is None else f"{r.first_alert_s:.2f} s",
            checks,
            "; ".join(r.settings) or "none",
        )
    return table


@dataclass(frozen=True)
class Plan:
    kills: int
    restarts: int
    outage_timeline_s: float
    speed: float
    drops: int
    cuts: int
    dongle_kills: int = 300  # f
    command_kills: int = 300  # g
    denied_s: float = 10.0  # h: seconds of SOS + telemetry against the denying ACL
    lock_s: float = 60.0  # i: seconds the store is write-locked (quick: 8)
    sms_kills: int = 100  # j
    # k-n: power cuts (the agent's data dir on devtools.powercut) during a-like, f, g and policy installs
    cuts_sos: int = 100  # k
    cuts_dongle: int = 100  # l
    cuts_commands: int = 50  # m
    cuts_policy: int = 50  # n


def plan(quick: bool, kills: int | None) -> Plan:
    if quick:
        return Plan(
            kills=kills or 12,
            restarts=3,
            outage_timeline_s=600.0,
            speed=60.0,
            drops=15,
            cuts=5,
            dongle_kills=8,
            command_kills=8,
            denied_s=3.0,
            lock_s=8.0,
            sms_kills=6,
            cuts_sos=4,
            cuts_dongle=4,
            cuts_commands=4,
            cuts_policy=4,
        )
    return Plan(kills=kills or 400, restarts=10, outage_timeline_s=3600.0, speed=60.0, drops=100, cuts=50)


async def _serial(cuts: int, base: Path | None) -> Row:
    row = await serial_vanish(cuts, base=base)
    row.settings.append("no gateway file nor broker: DongleLink alone, reopen 0.02-0.2 s (default 0.05-2 s)")
    return row


Job = tuple[str, Callable[[], Awaitable[Row]]]


def jobs(p: Plan, *, seed: int, base: Path | None) -> list[Job]:
    """Every row of the table, in order, with its letter (row b is two rows: without and with persistence)."""
    return [
        ("a", lambda: agent_kills(p.kills, seed=seed, base=base)),
        ("b", lambda: broker_restarts(p.restarts, persistence=False, seed=seed, base=base)),
        ("b", lambda: broker_restarts(p.restarts, persistence=True, seed=seed, base=base)),
        ("c", lambda: uplink_outage(p.outage_timeline_s, speed=p.speed, base=base)),
        ("d", lambda: publish_drops(p.drops, base=base)),
        ("e", lambda: _serial(p.cuts, base)),
        ("f", lambda: dongle_kills(p.dongle_kills, seed=seed, base=base)),
        ("g", lambda: command_kills(p.command_kills, seed=seed, base=base)),
        ("h", lambda: denied_publish(stream_s=p.denied_s, base=base)),
        ("i", lambda: locked_store(p.lock_s, base=base)),
        ("j", lambda: sms_kills(p.sms_kills, seed=seed, base=base)),
        ("k", lambda: agent_kills(p.cuts_sos, seed=seed, base=base, crash=PowerCut(seed))),
        ("l", lambda: dongle_kills(p.cuts_dongle, seed=seed, base=base, crash=PowerCut(seed))),
        ("m", lambda: command_kills(p.cuts_commands, seed=seed, base=base, crash=PowerCut(seed))),
        ("n", lambda: policy_cuts(p.cuts_policy, seed=seed, base=base, crash=PowerCut(seed))),
    ]


ROWS = "".join(dict.fromkeys(letter for letter, _ in jobs(plan(True, None), seed=1, base=None)))


async def run_all(p: Plan, only: str, *, seed: int, base: Path | None, deadline: float) -> list[tuple[str, Row]]:
    """The chosen rows (``only``: their letters), each with its letter."""
    rows = []
    for letter, job in jobs(p, seed=seed, base=base):
        if letter not in only:
            continue
        started = time.monotonic()
        try:
            row = await asyncio.wait_for(job(), deadline)
        except Exception as exc:  # a scenario that cannot finish is a failed row, not a crash
            row = Row(f"scenario {letter}")
            row.failures.append(f"{type(exc).__name__}: {exc}")
        row.notes.append(f"{time.monotonic() - started:.0f}s")
        console.print(render([row], f"scenario {letter}"))
        rows.append((letter, row))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chaos", description=DESCRIPTION)
    parser.add_argument("--quick", action="store_true", help="the short CI variant (about a minute)")
    parser.add_argument("--kills", type=int, default=None, help="agent kills in scenario a (default 400, quick 12)")
    parser.add_argument("--only", default=ROWS, help=f"scenarios to run, e.g. 'ac' (default {ROWS})")
    parser.add_argument("--seed", type=int, default=1, help="random seed for kill and restart moments")
    parser.add_argument("--keep", type=Path, default=None, help="keep work dirs (logs, databases) under this dir")
    parser.add_argument("--deadline", type=float, default=900.0, help="seconds allowed per scenario")
    parser.add_argument(
        "--results",
        type=Path,
        default=record.PATH,
        help="the rows are merged into this file (bench-results/chaos.json)",
    )
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    p = plan(args.quick, args.kills)
    started = time.monotonic()
    lettered = asyncio.run(run_all(p, args.only, seed=args.seed, base=args.keep, deadline=args.deadline))
    rows = [row for _, row in lettered]
    title = f"chaos {'--quick' if args.quick else 'full'} run, {time.monotonic() - started:.0f} s"
    console.print(render(rows, title))
    command = " ".join(["just chaos", *argv])
    variant = "quick" if args.quick else "full"
    path = record.write([record.record(x, row, variant=variant, command=command) for x, row in lettered], args.results)
    console.print(f"rows {''.join(dict.fromkeys(x for x, _ in lettered))} recorded in {path}")
    bad = [r.fault for r in rows if not r.ok]
    if bad:
        console.print(f"[red]FAILED: {', '.join(bad)}[/red]")
        return 1
    console.print("[green]0 lost in every scenario; every check passed[/green]")
    return 0
