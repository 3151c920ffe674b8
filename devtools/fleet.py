"""`just fleet`: a signed policy rolled out to a 3,000-lamp fleet on a real Mosquitto.

Owns: the fleet run. It starts a private Mosquitto, one `edge-agent run` process per gateway
(30 by default, 100 virtual lamps each) and lamp-simulator processes, signs a new policy as
the centre would, and rolls it out THROUGH THE CENTRE (centre/: its ingest and rollout driver
in this process, on SQLite in the work dir): a canary wave (``--canary``, 2 gateways), then
``--waves`` (100%). It measures the time from the main wave's publish (the centre's stored
``started``) until every lamp *reports* the new version; the canary wave is reported apart.
Then again with message loss injected at the lamps and some
gateways killed (SIGKILL) and restarted during the rollout. Zero lamps may be left behind.
Loopback only; every phase has a deadline and the run stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import aiomqtt
import msgspec
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from devtools.cpu import cpu_seconds, machine_busy
from devtools.fleet_centre import FleetCentre
from devtools.fleet_lamps import lamp_ids
from devtools.fleet_report import (
    AGENT_STAMPS,
    Phase,
    console,
    print_phases,
    print_summary,
    record_runs,
    summarise,
)
from devtools.gateway_config import write_gateway_config
from devtools.mosquitto import MosquittoProcess
from edge_agent.policy.bundle_sign import build_bundle, sign_bundle
from edge_agent.policy.keys import generate_private_key, key_id, public_key_to_pem
from edge_agent.transports.mqtt_client import NO_DELAY

ROOT = Path(__file__).resolve().parents[1]
POLICY = ROOT / "scenarios" / "policies" / "naxi-standard.toml"


def gateway_ids(n: int) -> list[str]:
    return [f"fleet-gw{i:02d}" for i in range(n)]


class Fleet:
    def __init__(
        self,
        work: Path,
        port: int,
        n_gateways: int,
        per_gateway: int,
        sim_processes: int,
        broker_pid: int | None = None,
        *,
        canary: int = 2,
        waves: str = "100%",
    ) -> None:
        self.work = work
        self.port = port
        self.broker_pid = broker_pid
        self.gateways = gateway_ids(n_gateways)
        self.per_gateway = per_gateway
        self.sim_processes = sim_processes
        self.key = generate_private_key()
        (work / "centre.pub").write_bytes(public_key_to_pem(self.key.public_key()))
        self.agents: dict[str, subprocess.Popen[bytes]] = {}
        self.sims: list[subprocess.Popen[bytes]] = []
        self.versions: dict[str, int | None] = {}
        self.retries: dict[str, int] = {}
        self.online: set[str] = set()
        self.messages = 0  # lamp state reports seen (the controller watches nothing else of the lamps')
        self.control = "fleet/control/loss"
        self.target: int | None = None
        self.heard: set[str] = set()  # lamps that reported at least once
        self.confirmed_at: list[float] = []
        self.last_confirmed: dict[str, float] = {}  # gateway -> wall clock of its last lamp's confirmation
        # the centre that rolls the policy out (centre/: SQLite in the work dir, this broker)
        self.centre = FleetCentre(work, port, canary=canary, waves=waves)
        for gw in self.gateways:
            write_gateway_config(
                work,
                gw,
                filename=f"{gw}.toml",
                policy_text=None,  # the shared policy of the scenarios
                policy=POLICY,
                data_dir=work / "state" / gw,
                district="naxi",
                south_url=f"mqtt://127.0.0.1:{port}",
                north_url=f"mqtt://127.0.0.1:{port}",
                trust_keys=["centre.pub"],
                lamps=[
                    {"id": lamp, "group": "town" if j % 3 else "village"}
                    for j, lamp in enumerate(lamp_ids(gw, per_gateway))
                ],
                cameras=(),
                wearables=(),
                responders=[{"id": "doctor", "role": "village_doctor"}, {"id": "crew", "role": "grid_worker"}],
            )
            for lamp in lamp_ids(gw, per_gateway):
                self.versions[lamp] = None

    def cpu(self) -> dict[str, float]:
        """CPU seconds used so far by each process group (killed gateways' share is lost)."""
        busy, total = machine_busy()
        return {
            "gateways": sum(cpu_seconds(p.pid) for p in self.agents.values()),
            "lamp simulators": sum(cpu_seconds(p.pid) for p in self.sims),
            "mosquitto": cpu_seconds(self.broker_pid),
            "controller": cpu_seconds(os.getpid()),  # this process: the centre and the lamp watcher
            "machine busy": busy,
            "machine total": total,
        }

    def start_agent(self, gw: str) -> None:
        with open(self.work / f"{gw}.log", "ab") as log:  # the child keeps its own copy of the fd
            self.agents[gw] = subprocess.Popen(
                [sys.executable, "-m", "edge_agent.cli", "run", "-c", str(self.work / f"{gw}.toml")],
                stdout=log,
                stderr=log,
            )

    def start(self) -> None:
        chunks = [self.gateways[i :: self.sim_processes] for i in range(self.sim_processes)]
        for chunk in chunks:
            self.sims.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "devtools.fleet_lamps",
                        "--port",
                        str(self.port),
                        "--lamps",
                        str(self.per_gateway),
                        "--gateways",
                        ",".join(chunk),
                        "--control",
                        self.control,
                    ],
                )
            )
        for gw in self.gateways:
            self.start_agent(gw)

    def stop(self) -> None:
        for proc in [*self.agents.values(), *self.sims]:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        for proc in [*self.agents.values(), *self.sims]:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()

    def bundle(self, version: int, level_shift: int) -> bytes:
        payload = POLICY.read_bytes().replace(b"level = 80\n", f"level = {80 - level_shift}\n".encode())
        now = int(time.time())
        bundle = build_bundle(
            payload,
            kind="policy",
            district="naxi",
            gateways=["*"],
            version=version,
            issued_at=now,
            not_before=now - 60,
            expires=now + 30 * 86400,
            key_id=key_id(self.key.public_key()),
            force=True,
        )
        return sign_bundle(bundle, self.key)

    def gateway_stamps(
        self, version: int, started: float, published: dict[str, float], restarted: set[str]
    ) -> dict[str, dict[str, float]]:
        """Each gateway's stage stamps for ``version``, as seconds after ``started``: its own
        (the ``rollout-timing`` lines in its log) plus the controller's publish (for a restarted
        gateway: when it was killed) and the time its last lamp reported."""
        out: dict[str, dict[str, float]] = {}
        for gw in self.gateways:
            stamps: dict[str, float] = {}
            log = self.work / f"{gw}.log"
            for line in log.read_text(errors="replace").splitlines() if log.exists() else ():
                _, marker, body = line.partition("rollout-timing ")
                if marker:
                    with contextlib.suppress(msgspec.DecodeError):
                        found = msgspec.json.decode(body)
                        if isinstance(found, dict) and found.get("version") == version:
                            stamps |= {k: v for k, v in found.items() if isinstance(v, int | float)}
            times = {k: v - started for k, v in stamps.items() if k in AGENT_STAMPS}
            times["killed" if gw in restarted else "published"] = published[gw] - started
            if gw in self.last_confirmed:
                times["confirmed"] = self.last_confirmed[gw] - started
            for k in ("turnaround_p50", "turnaround_p90", "retries", "deferred"):  # not times: as logged
                if k in stamps:
                    times[k] = stamps[k]
            out[gw] = {k: round(v, 4) for k, v in times.items()}
        return out

    async def watch(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            topic = str(message.topic)
            parts = topic.split("/")
            raw = message.payload if isinstance(message.payload, bytes) else b""
            if len(parts) == 6 and parts[3] == "lamp" and parts[5] == "state":
                self.messages += 1
                version = msgspec.json.decode(raw).get("policy_version")
                self.heard.add(parts[4])
                if version != self.versions.get(parts[4]) and version == self.target:
                    self.confirmed_at.append(time.monotonic())
                    self.last_confirmed[parts[2]] = time.time()
                self.versions[parts[4]] = version
            elif topic.endswith("/rollout"):
                self.retries[parts[2]] = msgspec.json.decode(raw).get("retries", 0)
            elif topic.endswith("/status"):
                (self.online.add if raw == b"online" else self.online.discard)(parts[2])

    async def wait_for(
        self,
        predicate: Callable[[], bool],
        deadline: float,
        progress: Progress,
        task: TaskID,
        total: int,
        count: Callable[[], int],
    ) -> bool:
        while time.monotonic() < deadline:
            progress.update(task, completed=count())
            if predicate():
                progress.update(task, completed=total)
                return True
            await asyncio.sleep(0.02)
        return False

    async def phase(self, name: str, version: int, loss: float, restarts: int, timeout: float) -> Phase:
        """One phase with the centre (ingest + rollout driver, SQLite) running in this process."""
        async with self.centre.running():
            return await self._phase(name, version, loss, restarts, timeout)

    async def _phase(self, name: str, version: int, loss: float, restarts: int, timeout: float) -> Phase:
        result = Phase(name, len(self.versions), len(self.gateways))
        async with aiomqtt.Client("127.0.0.1", self.port, socket_options=NO_DELAY) as client:
            await client.subscribe("district/v1/+/lamp/+/state", qos=0)
            await client.subscribe("district/v1/+/rollout", qos=0)
            await client.subscribe("district/v1/+/status", qos=0)
            watcher = asyncio.create_task(self.watch(client))
            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            ) as progress:
                ready = progress.add_task("gateways online", total=len(self.gateways))
                if not await self.wait_for(
                    lambda: len(self.online) == len(self.gateways),
                    time.monotonic() + 120,
                    progress,
                    ready,
                    len(self.gateways),
                    lambda: len(self.online),
                ):
                    raise SystemExit(f"only {len(self.online)} of {len(self.gateways)} gateways came online")
                progress.remove_task(ready)
                # the start-up burst (every lamp gets its level, every lamp reports) must be over
                # before the clock starts: the figure is the rollout's, not the boot's
                settled = progress.add_task("lamps reporting", total=len(self.versions))
                await self.wait_for(
                    lambda: len(self.heard) == len(self.versions),
                    time.monotonic() + 60,
                    progress,
                    settled,
                    len(self.versions),
                    lambda: len(self.heard),
                )
                progress.remove_task(settled)
                await asyncio.sleep(1.0)
                await client.publish(self.control, str(loss).encode(), qos=1, retain=True)
                await asyncio.sleep(0.3)
                retries_before = sum(self.retries.values())
                messages_before = self.messages
                envelope = self.bundle(version, level_shift=10 * version)
                self.target = version
                self.confirmed_at = []
                self.last_confirmed = {}
                cpu_before = self.cpu()
                # through the centre: a rollout in its database, its driver publishes wave by wave
                canary_started = time.monotonic()
                rollout_id, canary = await self.centre.start_rollout(envelope, self.gateways, timeout)
                wave1 = await self.centre.wave_started(rollout_id, canary_started + timeout)
                if wave1 is None:
                    raise SystemExit(f"the canary wave did not finish: {self.centre.status(rollout_id)}")
                # the clock starts at the main wave's publish (the centre's stored `started`)
                started = time.monotonic() - (time.time() - wave1)
                wall_started = wave1
                result.canary_gateways = len(canary)
                result.canary_s = wave1 - (time.time() - (time.monotonic() - canary_started))
                self.confirmed_at = [t for t in self.confirmed_at if t >= started]
                published: dict[str, float] = {}
                if restarts:
                    await asyncio.sleep(0.2)
                    rest = [gw for gw in self.gateways if gw not in canary]
                    victims = random.Random(version).sample(rest, restarts)
                    for gw in victims:
                        os.kill(self.agents[gw].pid, signal.SIGKILL)
                        self.agents[gw].wait()
                        self.online.discard(gw)
                        published[gw] = time.time()  # for a restarted gateway: when it was killed
                    for gw in victims:
                        self.start_agent(gw)
                    result.restarted = victims
                total = len(self.versions)
                rolling = progress.add_task(f"{name}: lamps on v{version}", total=total)

                def count() -> int:
                    return sum(1 for v in self.versions.values() if v == version)

                def done() -> bool:
                    return count() == total

                converged = await self.wait_for(done, started + timeout, progress, rolling, total, count)
                if converged:
                    result.seconds = time.monotonic() - started
                cpu_after = self.cpu()
                result.cpu = {k: round(cpu_after[k] - cpu_before[k], 2) for k in cpu_after}
                times = sorted(t - started for t in self.confirmed_at)
                if times:
                    result.quantiles = tuple(times[min(len(times) - 1, int(q * len(times)))] for q in (0.1, 0.5, 0.9))
                result.left_behind = total - count()
                ended = await self.centre.ended(rollout_id, time.monotonic() + 30)
                if ended.state != "succeeded":
                    console.print(f"[red]the centre's rollout {rollout_id} ended {ended.state}: {ended.reason}[/red]")
                for gw, stamp in await asyncio.to_thread(self.centre.started_stamps, rollout_id):
                    published.setdefault(gw, stamp)
            await asyncio.sleep(0.5)  # let the rollout summaries settle for the retry count
            stamps = self.gateway_stamps(version, wall_started, published, set(result.restarted))
            result.stamps = {gw: times for gw, times in stamps.items() if gw not in canary}  # timed apart
            result.messages = self.messages - messages_before
            result.retries = sum(self.retries.values()) - retries_before
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await client.publish(self.control, b"0", qos=1, retain=True)
        return result


def run_fleet(
    n_gateways: int,
    per_gateway: int,
    loss: float,
    restarts: int,
    timeout: float,
    sim_processes: int,
    *,
    canary: int = 2,
    waves: str = "100%",
) -> list[Phase]:
    with tempfile.TemporaryDirectory(prefix="fleet-") as tmp, MosquittoProcess() as mosq:
        fleet = Fleet(
            Path(tmp), mosq.port, n_gateways, per_gateway, sim_processes, mosq.pid, canary=canary, waves=waves
        )
        console.print(
            f"[bold]fleet[/bold]: {n_gateways} gateways x {per_gateway} lamps on Mosquitto 127.0.0.1:{mosq.port}"
        )
        fleet.start()
        try:
            phases = [asyncio.run(fleet.phase("no faults", 1, 0.0, 0, timeout))]
            phases.append(
                asyncio.run(fleet.phase(f"{loss:.0%} loss, {restarts} gateways killed", 2, loss, restarts, timeout))
            )
        finally:
            fleet.stop()
        return phases


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="just fleet", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=1, help="independent runs (a fresh fleet each), then a summary (1)")
    parser.add_argument("--gateways", type=int, default=30, help="gateways (default 30)")
    parser.add_argument("--lamps-per-gateway", type=int, default=100, help="virtual lamps per gateway (default 100)")
    parser.add_argument("--loss", type=float, default=0.05, help="message loss at the lamps in the fault phase (0.05)")
    parser.add_argument("--restarts", type=int, default=3, help="gateways killed and restarted in the fault phase (3)")
    parser.add_argument("--timeout", type=float, default=60.0, help="give up on a phase after this many seconds")
    parser.add_argument("--sim-processes", type=int, default=6, help="processes simulating the lamps (6)")
    parser.add_argument("--canary", type=int, default=2, help="the centre's canary wave, in gateways (2)")
    parser.add_argument("--waves", default="100%", help="the centre's waves after the canary (100%%)")
    parser.add_argument(
        "--record", type=Path, default=ROOT / "bench-results" / "fleet.json", help="measured figures (JSON) go here"
    )
    args = parser.parse_args(argv)
    runs: list[list[Phase]] = []
    for number in range(1, args.runs + 1):
        phases = run_fleet(
            args.gateways,
            args.lamps_per_gateway,
            args.loss,
            args.restarts,
            args.timeout,
            args.sim_processes,
            canary=args.canary,
            waves=args.waves,
        )
        runs.append(phases)
        print_phases(phases, f"Policy rollout to the fleet, run {number} of {args.runs}")
    print_summary(summarise(runs))
    command = "just fleet " + " ".join(argv if argv is not None else sys.argv[1:])
    path = record_runs(args.record, runs, args.lamps_per_gateway, args.loss, command.strip(), args.sim_processes)
    console.print(f"wrote {path}")
    if any(p.seconds is None or p.left_behind for phases in runs for p in phases):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
