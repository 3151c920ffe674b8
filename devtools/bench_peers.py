"""`just bench-peers`: the gateway against Node-RED, one harness, one broker, one run.

The peer (../shared/peers/nodered: Node-RED 4.1.15, its flow and the harness ``bench_peer.py``)
implements the rule contract; so does our agent, as a shipped config (examples/peer/: foreign
topics plus a two-rule policy). This script copies the peer into ``bench-results/peers/``,
installs it from its lock file (``npm ci``, once), starts one Mosquitto (the peer's
``set_tcp_nodelay`` config, on a free loopback port), and runs the harness's rounds against
each agent in turn, alternating which goes first, each on a fresh process (and, for ours, a
fresh data dir). Then one table, medians over the rounds, with the issue's aims, and
``bench-results/bench-peers.json``. Loopback only; every process it starts, it stops.
An A/B of our agent alone (records nothing): ``just bench-peers --quick --rounds 1 --agents
edge-agent --phases flood1 flood0 [--flood-n 30000] --agent-src ../other-checkout``, run
alternately against each checkout; it prints the floods, the agent's CPU per event and the load.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from devtools.mosquitto import mosquitto_binary
from edge_agent.transports.broker import free_port
from twin.bench_record import Row, record

ROOT = Path(__file__).resolve().parent.parent
PEER = ROOT.parent / "shared" / "peers" / "nodered"
WORK = ROOT / "bench-results" / "peers"
PEER_FILES = (
    "package.json",
    "package-lock.json",
    "flows.json",
    "settings.js",
    "bench_peer.py",
    "mosquitto-nodelay.conf",
)
console = Console()
AGENTS = ("edge-agent", "node-red")
PHASES = ("flood0", "flood1", "paced1", "paced0")


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# where the agent's CPU goes per event in a QoS 1 flood, kept in every result's notes
PROFILE = (
    "Profile (cProfile of the agent, a 20,000-event QoS 1 flood from another process, 2026-12-06; shares of "
    "the profiled time): paho and aiomqtt reading 50% (paho's packet loop 7%, 3 recv() per packet 3%, "
    "decode_publish 9%, paho's MQTTMessage with a threading.Condition each 4%, its two DEBUG log calls per "
    "packet 3%, aiomqtt's Message copy and asyncio.Queue 12%); the link's batches and the agent's intake 36% "
    "(payload decode 6%, routing, engine, inbox and history 19%, of which SQLite 7%: 4 statements per event, "
    "two savepoints, the inbox row, the incident row; the PUBACKs 3%); writing 3%; idle in epoll 7%. "
    "127 us of CPU per event under cProfile. With Receive Maximum 65,535 and up to 1,024 packets read per "
    "socket wake, the 20,000 events took 23 wakes (before: one per packet). Since then paho's messages are "
    "queued as they are (aiomqtt's copy gone: 10 fewer Python calls per message). "
    "Issue 22, second look (py-spy sampling the agent through a `--quick --agents edge-agent --phases flood1` "
    "round, and strace -c of 6 s of a 10,000-event QoS 1 flood, 2026-12-06, load 1-8 from other work on the "
    "2 cores): paho's socket calls were the biggest single items, one send() per PUBACK and per alert (11% of "
    "the samples) and recv(1), recv(1), recv(rest) per packet (6%): 47,068 recvfrom for 7,500 events. Now a "
    "batch's PUBACKs are one queued write, queued packets go out in one send(), and reads come from one "
    "recv(64 KiB) buffer (transports/mqtt_io.py): 228 sendto and 767 recvfrom for the same flood. "
    "What is left: the intake and its SQLite 18% of the samples (savepoint per message, inbox, incident "
    "and outbox rows), the outbox drain 12% (pending, publish, DELETE of the delivered rows), paho's "
    "packet handling 9% (decode, MQTTMessage), the WAL fsync thread 4%; pwrite64 ~2.8 per event (each "
    "small batch's COMMIT writes its pages again). "
    "Third look (2026-12-06, load 0.9-1.5): the agent's CPU read every 0.5 s through a 60,000-event "
    "QoS 1 flood is 92-106% of one core from the flood's first second to its last (70-84% in the final second, "
    "the outbox draining): the flood rate is the CPU per event (~110 us), not a wait; the 43-50% of the second "
    "look was the other work on the machine. paho walked every message in flight on each PUBACK of an alert "
    "(its _update_inflight: O(window) per PUBACK); now only when one is queued. SQLite per alert, timed on "
    "the real store (tests of one statement at a time, 40,000 events): the savepoint 4 us, the incident row "
    "(event_log, with its trim trigger) 6.5 us, the outbox row 5-9 us (its random 32-hex msg_id UNIQUE index "
    "~2 us of it), the drain's SELECT back 3.4 us and DELETE 3-5 us: ~25 us of the ~110. The rest is Python "
    "spread thin: paho's packet handling ~25%, the foreign-topic decode ~6%, the engine ~9%. Next: hand the "
    "drain the rows its commit just wrote (no SELECT back), one savepoint per batch with a replay on failure, "
    "or the intake and its SQLite in a second process fed in batches."
)


def prepare(peer: Path, work: Path, port: int, node_red: bool = True) -> None:
    """Copy the peer (rewritten to ``port``) and install Node-RED from its lock file (if measured)."""
    work.mkdir(parents=True, exist_ok=True)
    for name in PEER_FILES:
        if not (peer / name).exists():
            raise SystemExit(f"{peer / name} is missing: the peer lives in ../shared/peers/nodered")
        text = (peer / name).read_text()
        if name in ("flows.json", "mosquitto-nodelay.conf"):
            text = text.replace("18883", str(port))
        (work / name).write_text(text)
    lock = hashlib.sha256((peer / "package-lock.json").read_bytes()).hexdigest()
    stamp = work / "node_modules" / ".lock-sha256"
    if node_red and (not stamp.exists() or stamp.read_text() != lock):
        if shutil.which("npm") is None:
            raise SystemExit("npm is not on PATH: install Node.js 20 (Debian: apt install nodejs npm)")
        console.print("installing Node-RED from the peer's lock file (npm ci)...")
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=work, check=True)
        stamp.write_text(lock)


def agent_config(work: Path, port: int) -> Path:
    """examples/peer/ with only the broker port and the data dir changed."""
    run = work / "agent"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    shutil.copy(ROOT / "examples" / "peer" / "policy.toml", run / "policy.toml")
    text = (ROOT / "examples" / "peer" / "gateway.toml").read_text()
    text = text.replace("mqtt://127.0.0.1:18883", f"mqtt://127.0.0.1:{port}")
    text = re.sub(r'data_dir = "[^"]*"', 'data_dir = "var/{id}"', text)
    (run / "gateway.toml").write_text(text)
    return run / "gateway.toml"


@contextlib.contextmanager
def process(
    argv: list[str], log: Path, cwd: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def wait_for_line(log: Path, pattern: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pattern in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise SystemExit(f"{log}: the process exited ({proc.returncode}) before {pattern!r}")
        time.sleep(0.1)
    raise SystemExit(f"{log}: no {pattern!r} within {timeout:.0f} s")


def start_command(name: str, work: Path, port: int) -> tuple[list[str], str]:
    if name == "node-red":
        red = work / "node_modules" / "node-red" / "red.js"
        return ["node", str(red), "--settings", str(work / "settings.js")], "Connected to broker"
    config = agent_config(work, port)
    return [sys.executable, "-m", "edge_agent.cli", "run", "-c", str(config)], "south link connected"


def agent_env(name: str, source: Path | None) -> dict[str, str] | None:
    """The agent's environment: ``source`` (a checkout, for an A/B) first on its path."""
    if source is None or name == "node-red":
        return None
    return {**os.environ, "PYTHONPATH": str(source.resolve())}


def one_round(name: str, index: int, args: argparse.Namespace, broker: subprocess.Popen[bytes], port: int) -> Path:
    work: Path = args.work
    argv, ready = start_command(name, work, port)
    log = work / f"{name}-{index}.log"
    out = work / f"round-{name}-{index}.json"
    with process(argv, log, work, agent_env(name, args.agent_src)) as proc:
        wait_for_line(log, ready, proc)
        time.sleep(args.startup_settle)  # like the peer's run_bench.sh: let start-up settle
        console.print(f"[bold]round {index}: {name}[/bold] (pid {proc.pid}, load {os.getloadavg()[0]:.1f})")
        harness = [sys.executable, str(work / "bench_peer.py"), "round", "--pid", str(proc.pid)]
        harness += ["--broker-pid", str(broker.pid), "--broker-log", str(work / "mosquitto.log")]
        harness += ["--port", str(port), "--out", str(out), *args.harness_args]
        subprocess.run(harness, cwd=work, check=True, timeout=args.round_timeout)
    return out


def phase(result: dict[str, Any], name: str) -> dict[str, Any]:
    return next((p for p in result["phases"] if p["phase"] == name), {})


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarize(rounds: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, float | None]]:
    """Per agent: the medians the table shows."""
    figures: dict[str, dict[str, float | None]] = {}
    for name, results in rounds.items():
        f: dict[str, float | None] = {}
        for q in ("0", "1"):
            floods = [phase(r, f"flood_q{q}") for r in results]
            f[f"flood{q}_alerts_s"] = median([p.get("alerts_per_s") for p in floods])
            f[f"flood{q}_loss_pct"] = median([p.get("loss_pct") for p in floods])
            f[f"flood{q}_rss_mb"] = median([p.get("agent_rss_mb_after") for p in floods])
            # the agent's CPU per event sent: steadier than a rate on a busy machine
            cpu = [p["agent_cpu_s"] * 1e6 / p["events_sent"] if "agent_cpu_s" in p else None for p in floods]
            f[f"flood{q}_cpu_us"] = median(cpu)
        paced = [phase(r, "paced_q1") for r in results]
        f["paced1_p50_ms"] = median([(p.get("latency_ms") or {}).get("p50") for p in paced])
        f["paced1_p99_ms"] = median([(p.get("latency_ms") or {}).get("p99") for p in paced])
        f["paced1_loss_pct"] = median([p.get("loss_pct") for p in paced])
        f["rss_idle_mb"] = median([r.get("rss_idle_mb") for r in results])
        f["rss_peak_mb"] = median([r.get("rss_peak_mb") for r in results])
        f["correct"] = float(all(r["correctness"]["ok"] for r in results))
        figures[name] = f
    return figures


def fmt(value: float | None, spec: str = ",.0f") -> str:
    return "n/a" if value is None else format(value, spec)


def rows(figures: dict[str, dict[str, float | None]]) -> list[Row]:
    ours, peer = figures["edge-agent"], figures["node-red"]

    def ratio(a: float | None, b: float | None) -> str:
        return f" ({a / b:.2f}x Node-RED)" if a and b else ""

    q1, q1p = ours["flood1_alerts_s"], peer["flood1_alerts_s"]
    p99, p99p = ours["paced1_p99_ms"], peer["paced1_p99_ms"]
    idle, idlep = ours["rss_idle_mb"], peer["rss_idle_mb"]
    return [
        Row(
            what="correctness check (7 crafted events, 3 alerts), every round",
            figure=f"edge-agent {'ok' if ours['correct'] else 'FAIL'}, Node-RED {'ok' if peer['correct'] else 'FAIL'}",
            aim="ok",
            met=bool(ours["correct"]),
        ),
        Row(
            what="QoS 1 flood, 50k events: alerts/s (loss %)",
            figure=f"edge-agent {fmt(q1)} ({fmt(ours['flood1_loss_pct'], '.1f')}%), "
            f"Node-RED {fmt(q1p)} ({fmt(peer['flood1_loss_pct'], '.1f')}%){ratio(q1, q1p)}",
            aim=">= Node-RED (moonshot 2x), no loss",
            met=(q1 is not None and q1p is not None and q1 >= q1p and not ours["flood1_loss_pct"]),
            value=q1,
            unit="alerts/s",
        ),
        Row(
            what="QoS 0 flood, 50k events: alerts/s (loss %), RSS after",
            figure=f"edge-agent {fmt(ours['flood0_alerts_s'])} ({fmt(ours['flood0_loss_pct'], '.1f')}%, "
            f"{fmt(ours['flood0_rss_mb'], '.0f')} MB), Node-RED {fmt(peer['flood0_alerts_s'])} "
            f"({fmt(peer['flood0_loss_pct'], '.1f')}%, {fmt(peer['flood0_rss_mb'], '.0f')} MB)",
            aim="memory bounded",
            value=ours["flood0_alerts_s"],
            unit="alerts/s",
        ),
        Row(
            what="1,000 msg/s QoS 1: alert latency p50 / p99",
            figure=f"edge-agent {fmt(ours['paced1_p50_ms'], '.2f')} / {fmt(p99, '.2f')} ms, "
            f"Node-RED {fmt(peer['paced1_p50_ms'], '.2f')} / {fmt(p99p, '.2f')} ms",
            aim="p99 <= Node-RED's",
            met=(p99 is not None and p99p is not None and p99 <= p99p),
            value=p99,
            unit="ms",
        ),
        Row(
            what="resident memory idle / peak",
            figure=f"edge-agent {fmt(idle, '.1f')} / {fmt(ours['rss_peak_mb'], '.1f')} MB, "
            f"Node-RED {fmt(idlep, '.1f')} / {fmt(peer['rss_peak_mb'], '.1f')} MB",
            aim="idle <= 46 MB (half of Node-RED's 92)",
            met=(idle is not None and idle <= 46),
            value=idle,
            unit="MB",
        ),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="just bench-peers", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds per agent, alternating who goes first (3)")
    parser.add_argument("--peer", type=Path, default=PEER, help="the peer's folder (../shared/peers/nodered)")
    parser.add_argument("--work", type=Path, default=WORK, help="where the peer is installed and run")
    parser.add_argument(
        "--quick", action="store_true", help="short rounds (10k-event floods, 5 s paced, short idle waits): a smoke run"
    )
    parser.add_argument(
        "--agents",
        nargs="+",
        choices=AGENTS,
        default=list(AGENTS),
        help="who is measured; one alone prints its figures and records nothing (an A/B)",
    )
    parser.add_argument(
        "--phases", nargs="+", choices=PHASES, default=list(PHASES), help="the harness's measured phases"
    )
    parser.add_argument("--flood-n", type=int, default=None, help="events per flood (harness default 50,000)")
    parser.add_argument(
        "--agent-src", type=Path, default=None, help="run our agent from this checkout (an A/B against another)"
    )
    parser.add_argument("--startup-settle", type=float, default=10.0, help="seconds after connect before a round")
    parser.add_argument("--round-timeout", type=float, default=1200.0)
    args = parser.parse_args(argv)
    args.harness_args = (
        ["--n", "10000", "--duration", "5", "--idle-wait", "5", "--settle", "5", "--pause", "1"] if args.quick else []
    )
    args.harness_args += ["--phases", *args.phases]
    if args.flood_n is not None:
        args.harness_args += ["--n", str(args.flood_n)]
    if args.quick:
        args.startup_settle = min(args.startup_settle, 2.0)
    binary = mosquitto_binary()
    if binary is None:
        raise SystemExit("mosquitto is not on PATH (Debian: apt install mosquitto)")
    port = free_port()
    prepare(args.peer, args.work, port, node_red="node-red" in args.agents)
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in args.agents}
    started = time.monotonic()
    with process(
        [binary, "-c", str(args.work / "mosquitto-nodelay.conf")], args.work / "mosquitto.log", args.work
    ) as broker:
        time.sleep(0.5)
        for index in range(1, args.rounds + 1):
            order = ["node-red", "edge-agent"] if index % 2 else ["edge-agent", "node-red"]
            for name in [n for n in order if n in args.agents]:
                path = one_round(name, index, args, broker, port)
                rounds[name].append(json.loads(path.read_text()))
                time.sleep(2)
    figures = summarize(rounds)
    if len(args.agents) == 1:  # an A/B run: its floods, nothing recorded
        for name, f in figures.items():
            flood = {
                q: f"{fmt(f[f'flood{q}_alerts_s'])} alerts/s ({fmt(f[f'flood{q}_loss_pct'], '.1f')}% lost, "
                f"{fmt(f[f'flood{q}_cpu_us'])} us CPU/event)"
                for q in "01"
            }
            console.print(
                f"{name} ({args.agent_src or 'this checkout'}): QoS 1 flood {flood['1']}, "
                f"QoS 0 {flood['0']}; load {loadavg()}"
            )
        return
    table = Table(title=f"edge-agent vs Node-RED 4.1.15, {args.rounds} rounds each (median)")
    for column in ("what", "figure", "aim", ""):
        table.add_column(column)
    found = rows(figures)
    for row in found:
        table.add_row(row.what, row.figure, row.aim, {True: "met", False: "[red]missed[/red]", None: ""}[row.met])
    console.print(table)
    command = "just bench-peers" + (" --quick" if args.quick else "") + f" --rounds {args.rounds}"
    path = record(
        "bench-peers",
        title="The gateway against Node-RED (same harness, same Mosquitto, alternating rounds)",
        command=command,
        rows=found,
        notes=(
            "Harness: ../shared/peers/nodered/bench_peer.py (QoS 1 flood with a 20-message publisher window; "
            "1,000 msg/s paced for 20 s). The agent runs examples/peer/ (foreign topics + a two-rule policy; "
            "every alert goes through the outbox and an event is acknowledged only after its alert is on disk; "
            "HTTP face off, like the peer's headless Node-RED). " + PROFILE
        ),
        extra={"figures": figures, "rounds": args.rounds, "seconds": round(time.monotonic() - started)},
    )
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
