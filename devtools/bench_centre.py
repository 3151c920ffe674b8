"""``just bench-centre``: the district centre fed by simulated gateways over a real Mosquitto.

Owns: the driver. It starts a private Mosquitto (a plain anonymous loopback listener: the shipped
ACL would need one broker account per simulated gateway) and, for each database, a fresh
PostgreSQL database (devtools/postgres.py) or SQLite file, the real ``centre run`` as a
subprocess on a generated centre.toml, and the feeders (devtools/bench_centre_feed.py, two
processes, half the gateways each). While they publish it polls the centre's database every
``POLL_S`` for the number of message ids committed (``seen_messages``: every telemetry report
and alert change carries one), so the figures depend on nothing the centre logs.

Figures per database: ingest rate (messages committed / time from the first publish to the last
commit), commit lag p50 / p99 (the k-th message committed is matched with the k-th published:
the centre reads one connection and commits in that order; the poll adds at most ``POLL_S``),
the centre process's CPU seconds (/proc), the database's growth per lamp per day (bytes per
report x reports a day), and the counts: lost (sent, PUBACKed, not in the database), doubled
(hourly roll-ups counting more reports than were sent, or more raw rows than ids) and rejected.
Writes bench-results/bench-centre.json (``python -m devtools.bench_results`` publishes it).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import paho.mqtt.client as mqtt
import typer
from paho.mqtt.enums import CallbackAPIVersion
from rich.console import Console
from rich.table import Table

from centre.db import Database, open_database, sqlite_path
from devtools.bench_peers import process
from devtools.cpu import cpu_seconds, machine_busy
from devtools.mosquitto import MosquittoProcess
from devtools.postgres import PostgresCluster
from edge_agent.transports.broker import free_port
from twin.bench_record import Row, record

POLL_S = 0.05
FEEDERS = 2
AIM_RATE = 2000.0  # msg/s: 10x the district's real load
AIM_P99_S = 1.0
REPORTS_A_DAY = 1440  # a lamp reporting once a minute

console = Console(width=max(Console().width, 130))
COLUMNS = ["database", "sent", "offered msg/s", "ingest msg/s", "lag p50", "lag p99", "lag max", "centre CPU",
           "DB per lamp-day", "lost", "doubled", "rejected"]  # fmt: skip


@dataclass
class Outcome:
    database: str
    sent: int = 0
    telemetry: int = 0
    alerts: int = 0
    unacked: int = 0
    committed: int = 0
    lost: int = 0
    doubled: int = 0
    rejected: int = 0
    offered_rate: float = 0.0
    ingest_rate: float = 0.0
    lag_p50: float = float("nan")
    lag_p99: float = float("nan")
    lag_max: float = float("nan")
    receive_p50: float = float("nan")  # publish -> the centre took it (seen_messages.received), exact per id
    receive_p99: float = float("nan")
    cpu_s: float = 0.0
    machine_busy: float = 0.0
    bytes_per_lamp_day: float = 0.0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def json(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and v != v else v) for k, v in self.__dict__.items()}


def _loadavg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def _db_bytes(db: Database) -> int:
    path = sqlite_path(db.url)
    if path is not None:  # the WAL folded into the file first: its size is the database's
        with contextlib.closing(sqlite3.connect(path)) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return path.stat().st_size
    return int(db.query("SELECT pg_database_size(current_database())")[0][0])


def _count(db: Database) -> int:
    return int(db.query("SELECT count(*) FROM seen_messages")[0][0])


class Poller(threading.Thread):
    """(wall time, message ids committed) every POLL_S, on its own connection."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.db = open_database(url, migrate=False)
        self.samples: list[tuple[float, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            count = _count(self.db)
            self.samples.append((time.time(), count))
            self.stop.wait(POLL_S)
        self.db.close()


@contextlib.contextmanager
def centre_process(work: Path, port: int, url: str) -> Iterator[subprocess.Popen[bytes]]:
    """The real ``centre run`` on a generated centre.toml; stopped with SIGTERM."""
    toml = work / "centre.toml"
    toml.write_text(
        f'[centre]\ndistrict = "naxi"\nid = "bench-centre"\n'
        f'[broker]\nurl = "mqtt://127.0.0.1:{port}"\nusername = "centre"\n'
        f'[database]\nurl = "{url}"\n[console]\nlisten = "127.0.0.1:{free_port()}"\n'
    )
    argv = [sys.executable, "-m", "centre.cli", "run", "-c", str(toml)]
    with process(argv, work / "centre.log", Path.cwd()) as proc:
        yield proc


def _wait_subscribed(port: int, db: Database, proc: subprocess.Popen[bytes], work: Path) -> None:
    """Publish a probe ``status`` until the centre has it in its database (it is subscribed)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-probe", protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                log = (work / "centre.log").read_text()[-3000:]
                raise SystemExit(f"the centre exited ({proc.returncode}):\n{log}")
            client.publish("district/v1/bench-probe/status", b"online", qos=1).wait_for_publish(5)
            with contextlib.suppress(Exception):
                if db.query("SELECT 1 FROM gateways WHERE gateway = 'bench-probe'"):
                    return
            time.sleep(0.2)
        raise SystemExit("the centre did not take a message within 60 s")
    finally:
        client.disconnect()
        client.loop_stop()


def _lag(publish_times: np.ndarray, samples: list[tuple[float, int]]) -> np.ndarray:
    """Per message: when the poll first saw at least k+1 ids committed, minus the k-th publish time."""
    t = np.array([s[0] for s in samples])
    c = np.maximum.accumulate(np.array([s[1] for s in samples]))
    n = min(len(publish_times), int(c[-1]) if len(c) else 0)
    idx = np.searchsorted(c, np.arange(1, n + 1), side="left")
    return np.asarray(t[idx] - publish_times[:n])


def run_one(
    database: str, url: str, port: int, work: Path, *, gateways: int, lamps: int, seconds: float, settle: float,
    burst: int, burst_every: float, interval: float,
) -> Outcome:  # fmt: skip
    """One run of the centre on one database."""
    out = Outcome(database)
    db = open_database(url)  # migrated before the centre starts: the empty size is the baseline
    try:
        with centre_process(work, port, url) as proc:
            _wait_subscribed(port, db, proc, work)
            empty = _db_bytes(db)
            base = _count(db)
            poller = Poller(url)
            cpu0, (busy0, total0) = cpu_seconds(proc.pid), machine_busy()
            run_tag = f"r{int(time.time())}{database[0]}"
            start_at = time.time() + 1.0
            share = -(-gateways // FEEDERS)
            feeders = []
            for k in range(FEEDERS):
                first = k * share
                count = min(share, gateways - first)
                if count <= 0:
                    break
                cmd = [
                    sys.executable, "-m", "devtools.bench_centre_feed", "--port", str(port),
                    "--out", str(work / f"feed{k}.json"), "--first", str(first), "--gateways", str(count),
                    "--lamps", str(lamps), "--interval", str(interval), "--seconds", str(seconds),
                    "--start-at", str(start_at), "--run", run_tag, "--feeder", str(k),
                    "--burst", str(max(1, burst * count // gateways)), "--burst-every", str(burst_every),
                ]  # fmt: skip
                feeders.append(subprocess.Popen(cmd))
            poller.start()
            for f in feeders:
                if f.wait() != 0:
                    raise SystemExit(f"a feeder failed ({f.returncode})")
            feeds = [json.loads((work / f"feed{k}.json").read_text()) for k in range(len(feeders))]
            out.sent = sum(f["sent"] for f in feeds)
            out.telemetry = sum(f["counts"]["telemetry"] for f in feeds)
            out.alerts = sum(f["counts"]["alert"] for f in feeds)
            out.unacked = sum(f["unacked"] for f in feeds)
            deadline = time.monotonic() + settle
            while time.monotonic() < deadline and (not poller.samples or poller.samples[-1][1] - base < out.sent):
                if proc.poll() is not None:
                    raise SystemExit(f"the centre exited ({proc.returncode}) during the run")
                time.sleep(POLL_S)
            time.sleep(2 * POLL_S)
            poller.stop.set()
            poller.join()
            out.cpu_s = cpu_seconds(proc.pid) - cpu0
            busy1, total1 = machine_busy()
            out.machine_busy = (busy1 - busy0) / max(total1 - total0, 1e-9)
        # the centre stopped: SQLite's WAL folded back into the file
        times = np.sort(np.array([t for f in feeds for t in f["times"]]))
        samples = [(t, c - base) for t, c in poller.samples]
        lags = _lag(times, samples)
        if len(lags):
            out.lag_p50, out.lag_p99, out.lag_max = (float(x) for x in np.percentile(lags, [50, 99, 100]))
        first_pub = float(times[0]) if len(times) else 0.0
        done = [t for t, c in samples if c >= out.sent]
        last_commit = done[0] if done else samples[-1][0]
        out.seconds = float(times[-1] - first_pub) if len(times) else 0.0
        out.offered_rate = out.sent / max(out.seconds, 1e-9)
        _counts(db, out, feeds, base)
        out.ingest_rate = out.committed / max(last_commit - first_pub, 1e-9)
        grown = _db_bytes(db) - empty
        out.bytes_per_lamp_day = grown / max(out.telemetry, 1) * REPORTS_A_DAY
    finally:
        db.close()
    return out


def _counts(db: Database, out: Outcome, feeds: list[dict[str, Any]], base: int) -> None:
    """Lost, doubled and rejected, from what was sent and what the database holds."""
    published = {f"{f['run']}-{f['feeder']}-{n}": t for f in feeds for n, t in enumerate(f["times"])}
    sent = set(published)
    received = {str(r[0]): float(r[1]) for r in db.query("SELECT msg_id, received FROM seen_messages")}
    found = set(received)
    waits = [received[i] - published[i] for i in sent & found]
    if waits:
        out.receive_p50, out.receive_p99 = (float(x) for x in np.percentile(waits, [50, 99]))
    out.committed = len(sent & found)
    out.lost = len(sent - found)
    raw = int(db.query("SELECT count(*) FROM lamp_telemetry")[0][0])
    changes = int(db.query("SELECT count(*) FROM alert_changes")[0][0])
    reports = int(db.query("SELECT COALESCE(sum(reports), 0) FROM lamp_hours")[0][0])
    # a row can exist once per id (primary keys); a double shows as a roll-up counting a report twice
    out.doubled = max(0, reports - out.telemetry) + max(0, raw - out.telemetry) + max(0, changes - out.alerts)
    out.rejected = int(db.query("SELECT COALESCE(sum(count), 0) FROM rejects")[0][0])


def _table(outcomes: list[Outcome], title: str) -> Table:
    table = Table(title=title)
    for name in COLUMNS:
        table.add_column(name, justify="left" if name == "database" else "right")
    for row in _cells(outcomes):
        table.add_row(*row)
    return table


def _cells(outcomes: list[Outcome]) -> list[list[str]]:
    return [
        [
            o.database,
            f"{o.sent:,}",
            f"{o.offered_rate:,.0f}",
            f"{o.ingest_rate:,.0f}",
            f"{o.lag_p50 * 1000:,.0f} ms",
            f"{o.lag_p99 * 1000:,.0f} ms",
            f"{o.lag_max * 1000:,.0f} ms",
            f"{o.cpu_s:.1f} s ({o.cpu_s / max(o.seconds, 1e-9):.0%})",
            f"{o.bytes_per_lamp_day / 1e3:,.0f} kB",
            str(o.lost),
            str(o.doubled),
            str(o.rejected),
        ]
        for o in outcomes
    ]


def bench(
    databases: list[str], *, gateways: int, lamps: int, seconds: float, burst: int, burst_every: float,
    settle: float, work: Path, interval: float, postgres_url: str | None = None,
) -> list[Outcome]:  # fmt: skip
    outcomes = []
    with MosquittoProcess() as broker, contextlib.ExitStack() as stack:
        for database in databases:
            if database == "postgresql" and postgres_url:
                url = postgres_url
            elif database == "postgresql":
                cluster = stack.enter_context(PostgresCluster())
                url = cluster.create_database()
            else:
                url = f"sqlite:///{work / 'centre.db'}"
            sub = work / database
            sub.mkdir(parents=True, exist_ok=True)
            console.print(f"[bold]{database}[/bold]: {gateways} gateways x {lamps} lamps for {seconds:g} s ...")
            outcome = run_one(
                database, url, broker.port, sub, gateways=gateways, lamps=lamps, seconds=seconds, settle=settle,
                burst=burst, burst_every=burst_every, interval=interval,
            )  # fmt: skip
            outcomes.append(outcome)
    return outcomes


def main(
    quick: Annotated[bool, typer.Option("--quick", help="10 s of feeding instead of --seconds.")] = False,
    seconds: Annotated[float, typer.Option(help="How long the gateways publish.")] = 60.0,
    gateways: Annotated[int, typer.Option(help="Simulated gateways (split over two feeder processes).")] = 1000,
    lamps: Annotated[int, typer.Option(help="Lamps per gateway.")] = 100,
    interval: Annotated[
        float,
        typer.Option(
            help="Each lamp reports once per this many seconds: 50 offers 2,000 msg/s from 100,000 lamps (the "
            "issue's aim, 10x the district's real load); 60 is once a minute."
        ),
    ] = 50.0,
    burst: Annotated[int, typer.Option(help="Gateways raising an alert (2 changes each) in each burst.")] = 100,
    burst_every: Annotated[float, typer.Option(help="Seconds between alert bursts (0: none).")] = 15.0,
    database: Annotated[
        list[str], typer.Option("--database", "-d", help="postgresql and/or sqlite (repeat; default both).")
    ] = ["postgresql", "sqlite"],  # noqa: B006
    settle: Annotated[float, typer.Option(help="Seconds to wait after the feed for the last commits.")] = 60.0,
    results: Annotated[
        Path | None, typer.Option(help="Folder for bench-centre.json (default: bench-results/).")
    ] = None,
    postgres_url: Annotated[
        str | None,
        typer.Option(help="An existing empty PostgreSQL database to use instead of a throwaway cluster."),
    ] = None,
    keep: Annotated[
        Path | None,
        typer.Option(help="Keep the work dir here (centre.toml and log, the SQLite file, what the feeders sent)."),
    ] = None,
) -> None:
    """Feed the district centre (`centre run`, a subprocess) from simulated gateways over a
    private Mosquitto, on PostgreSQL and on SQLite; print ingest rate, commit lag, the centre's
    CPU, database size per lamp per day, and lost / doubled / rejected messages; write
    bench-results/bench-centre.json."""
    for name in database:
        if name not in ("postgresql", "sqlite"):
            raise typer.BadParameter(f"{name!r}: postgresql or sqlite", param_hint="--database")
    if quick:
        seconds = 10.0
    # a SIGTERM unwinds like Ctrl-C: the centre, the feeders, the broker and the cluster stop
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    argv = " ".join(sys.argv[1:])
    command = f"just bench-centre {argv}".strip()
    load_before = _loadavg()
    with contextlib.ExitStack() as stack:
        work = keep or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-centre-")))
        outcomes = bench(
            database, gateways=gateways, lamps=lamps, seconds=seconds, burst=burst, burst_every=burst_every,
            settle=settle, work=work, interval=interval, postgres_url=postgres_url,
        )  # fmt: skip
    load_after = _loadavg()
    title = (
        f"The district centre (`just bench-centre`): {gateways:,} gateways, {gateways * lamps:,} lamps every "
        f"{interval:g} s + alert bursts, {seconds:g} s"
    )
    console.print(_table(outcomes, title))
    for o in outcomes:
        console.print(
            f"{o.database}: publish -> taken by the centre p50 {o.receive_p50 * 1000:,.0f} ms, "
            f"p99 {o.receive_p99 * 1000:,.0f} ms (the rest of the commit lag is the batch's write and COMMIT)"
        )
    broker_note = "broker: a private Mosquitto, plain anonymous loopback listener (not the shipped ACL)"
    console.print(f"{broker_note}; load {load_before} before, {load_after} after")
    rows = []
    for o in outcomes:
        aim = o.database == "postgresql"
        rows += [
            Row(
                what=f"{o.database}: ingest rate", figure=f"{o.ingest_rate:,.0f} msg/s (offered {o.offered_rate:,.0f})",
                aim=f"keeps up with >= {AIM_RATE:,.0f} msg/s" if aim else "",
                met=(o.offered_rate >= AIM_RATE and o.ingest_rate >= 0.98 * o.offered_rate) if aim else None,
                value=o.ingest_rate, unit="msg/s",
            ),
            Row(
                what=f"{o.database}: commit lag p99 (p50)", figure=f"{o.lag_p99:.3f} s ({o.lag_p50:.3f} s)",
                aim=f"< {AIM_P99_S:g} s" if aim else "", met=(o.lag_p99 < AIM_P99_S) if aim else None,
                value=o.lag_p99, unit="s",
            ),
            Row(
                what=f"{o.database}: lost / doubled / rejected", figure=f"{o.lost} / {o.doubled} / {o.rejected}",
                aim="0 / 0 / 0", met=o.lost == 0 and o.doubled == 0 and o.rejected == 0,
            ),
        ]  # fmt: skip
    extra = {
        "mode": "quick" if quick else "full",
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "broker": "plain loopback (anonymous)",
        "gateways": gateways,
        "lamps": gateways * lamps,
        "seconds": seconds,
        "interval": interval,
        "poll_s": POLL_S,
        "databases": {o.database: o.json() for o in outcomes},
    }
    notes = (
        f"{'Quick' if quick else 'Full'} run, load {'/'.join(f'{x:.1f}' for x in load_before)} at the start; "
        f"{broker_note}. Lag: from the publish to the poll ({POLL_S * 1000:.0f} ms) that first saw the row "
        "committed (the k-th row committed matched with the k-th message published); of it, publish -> taken by "
        "the centre: "
        + ", ".join(f"{o.database} p50 {o.receive_p50:.3f} s, p99 {o.receive_p99:.3f} s" for o in outcomes)
        + ". CPU: the `centre run` process only (% of one core over the feed). Size: the database's growth per "
        "telemetry report x 1,440 reports a day (raw telemetry and message ids, before retention)."
    )
    kwargs: dict[str, Any] = {} if results is None else {"results": results}
    path = record(
        "bench-centre", title="The district centre (`just bench-centre`)", command=command, rows=rows,
        notes=notes, columns=COLUMNS,
        cells=_cells(outcomes), extra=extra, **kwargs,
    )  # fmt: skip
    console.print(f"written {path}")
    bad = [o.database for o in outcomes if o.lost or o.doubled or o.rejected or o.unacked]
    if bad:
        console.print(f"[red]messages lost, doubled or rejected on {', '.join(bad)}[/red]")
        raise typer.Exit(1)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    typer.run(main)
