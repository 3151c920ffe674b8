"""`just chaos`: fault injection against a real gateway process and real Mosquitto brokers.

Owns: the chaos suite of issue 6. Every scenario starts its own south (village) and north
(city) Mosquitto on free loopback ports, runs `edge-agent run` as a child process, publishes
as a wearable hub / lamps on the south broker, and plays the city platform on the north
broker with ``edge_agent.receiver.Receiver`` (dedupe by ``msg_id``, per-device ``seq`` gaps).

Scenarios (rows of the table):
  a. kill -9 of the agent at random moments during an SOS stream, restarted at once;
     ``PRAGMA integrity_check`` after every kill and at the end.
  b. the north broker killed (-9) and restarted while alerts flow, without and with broker
     persistence.
  c. the uplink down for an hour of accelerated time at 10 msg/s of timeline traffic
     (lamp telemetry and SOS): no per-device gaps, alerts before the telemetry backlog,
     time to the first alert after reconnection.
  d. a proxy that drops the connection right after a QoS 1 PUBLISH (before the PUBACK).
  e. a serial port vanishing in the middle of an SOS frame (DongleLink over a pty).

"sent" counts what the south broker acknowledged (PUBACK to our publisher), so "lost" is
exactly "acknowledged by the gateway's side and never seen by the platform". Loopback only;
every phase has a deadline; the run stops by itself. Exit code 1 if anything was lost or a
check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiomqtt
import msgspec
from rich.console import Console
from rich.table import Table

from devtools.flaky_proxy import FlakyProxy
from devtools.mosquitto import MosquittoProcess
from edge_agent.receiver import Receiver
from edge_agent.transports.mqtt import NO_DELAY, QUIET_LOG

ROOT = Path(__file__).resolve().parents[1]
GW = "chaos-gw"
TOPIC_ROOT = f"district/v1/{GW}"
SOS_MESSAGE = re.compile(r"^SOS (\d+) from (\S+)$")
console = Console(width=None if sys.stdout.isatty() else 200)

GATEWAY = """
[gateway]
id = "{gw}"
latitude = 28.77
longitude = 105.37
timezone = "Asia/Shanghai"
data_dir = "state"
policy = "policy.toml"

[south]
url = "mqtt://127.0.0.1:{south}"

[north]
url = "mqtt://127.0.0.1:{north}"
# the default reconnect backoff (0.5 s doubling, capped at 4 s with full jitter) is on test

[limits]
outbox_max_mb = 512  # no eviction here: a gap in seq would then be a documented eviction

[[responders]]
id = "doc1"
role = "village_doctor"
{devices}
"""

# The SOS seq is visible in the alert, so each north alert maps back to one SOS.
POLICY = """
[policy]
name = "chaos"

[programs.village]
on = "sunset+10m"
off = "sunrise-15m"
level = 80

[assign]
default = "village"

[[rules]]
id = "sos"
when = { trigger = "event", event = "sos", kind = "wearable" }
then = [ { action = "alert", priority = 1, message = "SOS {seq} from {device}" } ]
"""

Key = tuple[Any, ...]  # ("sos", device, seq) or ("tel", marker)


@dataclass
class Row:
    fault: str
    injections: int = 0
    sent: int = 0
    delivered: int = 0
    lost: int = 0
    duplicates: int = 0
    drain_s: float | None = None
    first_alert_s: float | None = None
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.lost == 0 and not self.failures


# ----- building blocks ---------------------------------------------------------------------------
def write_config(work: Path, south: int, north: int, *, lamps: int = 0, wearables: int = 4) -> Path:
    devices = []
    for i in range(1, lamps + 1):
        devices.append(f'[[lamps]]\nid = "L{i}"\ngroup = "village"\nzone = "square"\n')
    for i in range(1, wearables + 1):
        devices.append(f'[[wearables]]\nid = "W{i}"\nzone = "lane"\n')
    (work / "policy.toml").write_text(POLICY)
    path = work / "gateway.toml"
    path.write_text(GATEWAY.format(gw=GW, south=south, north=north, devices="\n".join(devices)))
    return path


def integrity(db: Path) -> str:
    """``PRAGMA integrity_check`` on the gateway's database ("ok" when sound)."""
    con = sqlite3.connect(str(db), timeout=10)
    try:
        return str(con.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        con.close()


def db_query(db: Path, sql: str) -> int:
    if not db.exists():
        return 0
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        row = con.execute(sql).fetchone()
        return int(row[0]) if row and row[0] is not None else 0
    except sqlite3.OperationalError:
        return 0  # schema not created yet
    finally:
        con.close()


class AgentProcess:
    """`edge-agent run -c CONFIG --speed N` as a child process that we can kill -9."""

    def __init__(self, config: Path, speed: float = 1.0) -> None:
        self.config = config
        self.speed = speed
        self.db = config.parent / "state" / "gateway.sqlite3"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] = open(config.parent / "agent.log", "ab")  # noqa: SIM115
        self.starts = 0

    def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        cmd = [sys.executable, "-m", "edge_agent.agent.cli", "run", "-c", str(self.config), "--speed", str(self.speed)]
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, cwd=str(ROOT), env=env)
        self.starts += 1

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def crashed(self) -> int | None:
        """The exit code if the agent died by itself."""
        return None if self.proc is None else self.proc.poll()

    def close(self) -> None:
        self.kill()
        self._log.close()


@dataclass
class Arrival:
    t: float
    key: Key | None
    kind: str  # "alert" | "telemetry"
    new: bool  # False: a duplicate (same msg_id) dropped by the Receiver


class Platform:
    """The city platform on the north broker: a persistent QoS 1 session, a Receiver."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.receiver = Receiver()
        self.arrivals: list[Arrival] = []
        self.first: dict[Key, int] = {}  # key -> index of its first arrival
        self.ids: dict[Key, set[str]] = {}  # key -> msg_ids seen (more than one: a double alert)
        self.subscribed = asyncio.Event()
        self.connects = 0
        self.hold = False  # while set, stay away from the broker
        self.ident = f"chaos-platform-{uuid.uuid4().hex[:8]}"
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Platform:
        self._task = asyncio.create_task(self._run())
        await wait_for(self.subscribed.wait, 15, "platform subscribed")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        """Connect, subscribe, listen; again after any failure (each step bounded in time)."""
        while True:
            await asyncio.sleep(0.02)
            if self.hold:
                continue
            client = aiomqtt.Client(
                "127.0.0.1",
                self.port,
                identifier=self.ident,
                clean_session=False,
                timeout=5,
                socket_options=NO_DELAY,
                logger=QUIET_LOG,
            )
            try:
                await asyncio.wait_for(client.__aenter__(), 5)
            except (aiomqtt.MqttError, OSError, TimeoutError):
                continue
            try:
                await client.subscribe(f"{TOPIC_ROOT}/alert", qos=1)
                await client.subscribe(f"{TOPIC_ROOT}/telemetry/#", qos=1)
                self.connects += 1
                self.subscribed.set()
                async for message in client.messages:
                    self._on(str(message.topic), message.payload)
                    if self.hold:
                        break
            except (aiomqtt.MqttError, OSError):
                pass
            finally:
                self.subscribed.clear()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.__aexit__(None, None, None), 2)

    def _on(self, topic: str, raw: Any) -> None:
        payload = raw if isinstance(raw, bytes) else b""
        try:
            body = msgspec.json.decode(payload)
        except msgspec.DecodeError:
            return
        if not isinstance(body, dict):
            return
        key: Key | None = None
        kind = "alert" if topic.endswith("/alert") else "telemetry"
        if kind == "alert":
            match = SOS_MESSAGE.match(str(body.get("message", "")))
            if match:
                key = ("sos", match.group(2), int(match.group(1)))
        elif isinstance(body.get("energy_wh"), int | float):
            key = ("tel", round(body["energy_wh"]))
        new = self.receiver.accept(body) is not None
        index = len(self.arrivals)
        self.arrivals.append(Arrival(time.monotonic(), key, kind, new))
        if key is not None:
            self.ids.setdefault(key, set()).add(str(body.get("msg_id")))
            self.first.setdefault(key, index)

    def alert_since(self, mark: int) -> bool:
        return any(a.kind == "alert" for a in self.arrivals[mark:])

    def has_all(self, keys: set[Key]) -> bool:
        return all(k in self.first for k in keys)

    def doubles(self) -> int:
        """Keys that came out under more than one msg_id (an SOS alerted twice)."""
        return sum(1 for ids in self.ids.values() if len(ids) > 1)


class Hub:
    """A wearable hub and lamps on the south broker; also watches the gateway's status."""

    def __init__(self, port: int, *, inflight: int = 32) -> None:
        self.port = port
        self.accepted: dict[Key, float] = {}  # key -> when the south broker acknowledged it
        self.failed = 0
        self.status = b""
        self._seqs: dict[str, int] = {}
        self._sem = asyncio.Semaphore(inflight)
        self._stack = contextlib.AsyncExitStack()
        self.client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Hub:
        self.client = await self._stack.enter_async_context(
            aiomqtt.Client(
                "127.0.0.1",
                self.port,
                identifier=f"chaos-hub-{uuid.uuid4().hex[:8]}",
                max_inflight_messages=64,
                socket_options=NO_DELAY,
                logger=QUIET_LOG,
            )
        )
        await self.client.subscribe(f"{TOPIC_ROOT}/status", qos=1)
        self._task = asyncio.create_task(self._listen())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._stack.aclose()

    async def _listen(self) -> None:
        assert self.client is not None
        with contextlib.suppress(aiomqtt.MqttError):
            async for message in self.client.messages:
                if isinstance(message.payload, bytes):
                    self.status = message.payload

    async def wait_online(self, timeout: float = 30) -> None:
        await wait_for(lambda: self.status == b"online", timeout, "gateway online on the south broker")

    def next_sos(self, device: str) -> Key:
        seq = self._seqs.get(device, 0) + 1
        self._seqs[device] = seq
        return ("sos", device, seq)

    async def send(self, key: Key) -> None:
        """Publish one SOS or lamp state (QoS 1); record it once the south broker acked it."""
        assert self.client is not None
        if key[0] == "sos":
            topic = f"{TOPIC_ROOT}/wearable/{key[1]}/event"
            body: dict[str, Any] = {"v": 1, "event": "sos", "seq": key[2]}
        else:
            marker = key[1]
            topic = f"{TOPIC_ROOT}/lamp/{key[2]}/state"
            body = {"v": 1, "on": True, "level": 50, "power_w": 40.0, "energy_wh": marker}
        async with self._sem:
            try:
                await self.client.publish(topic, msgspec.json.encode(body), qos=1, timeout=20)
            except aiomqtt.MqttError:
                self.failed += 1
                return
        self.accepted[key] = time.monotonic()


async def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> None:
    """Wait (real time) until ``predicate()`` is truthy (or an awaitable it returns is done)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if isinstance(value, Awaitable):
            await asyncio.wait_for(value, timeout)
            return
        if value:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.01)


async def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


@contextlib.asynccontextmanager
async def brokers(
    work: Path, *, north_persistence: bool = False, north_extra: str = ""
) -> AsyncIterator[tuple[MosquittoProcess, MosquittoProcess]]:
    (work / "south").mkdir()
    (work / "north").mkdir()
    # mosquitto started as root drops to user "mosquitto": let it write its persistence file
    os.chmod(work, 0o755)  # a TemporaryDirectory is 0700
    os.chmod(work / "north", 0o777)
    south = MosquittoProcess(workdir=work / "south")
    north = MosquittoProcess(persistence=north_persistence, extra_config=north_extra, workdir=work / "north")
    try:
        south.start()
        north.start()
        yield south, north
    finally:
        south.close()
        north.close()


async def stream(rate: float, stop: asyncio.Event, make: Callable[[int], Key | None], hub: Hub) -> int:
    """Publish ``make(i)`` at ``rate`` per second (pipelined, in order) until ``stop``."""
    start = time.monotonic()
    pending: set[asyncio.Task[None]] = set()
    i = 0
    while not stop.is_set():
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            continue
        key = make(i)
        i += 1
        if key is not None:
            task = asyncio.create_task(hub.send(key))
            pending.add(task)
            task.add_done_callback(pending.discard)
            await asyncio.sleep(0)
    if pending:
        await asyncio.wait(pending, timeout=30)
    return i


def tally(row: Row, hub: Hub, platform: Platform, keys: set[Key] | None = None) -> None:
    keys = set(hub.accepted) if keys is None else keys
    row.sent = len(keys)
    row.delivered = sum(1 for k in keys if k in platform.first)
    row.lost = row.sent - row.delivered
    if row.lost:
        missing = sorted(str(k) for k in keys if k not in platform.first)
        row.failures.append(f"lost {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
    row.duplicates = platform.receiver.duplicates
    doubles = platform.doubles()
    if doubles:
        row.failures.append(f"{doubles} SOS alerted under two msg_ids")
    if hub.failed:
        row.notes.append(f"{hub.failed} publishes not acked by south (not counted as sent)")


def check_db(row: Row, agent: AgentProcess) -> None:
    result = integrity(agent.db)
    if result != "ok":
        row.failures.append(f"integrity_check: {result}")
    evicted = db_query(agent.db, "SELECT value FROM counters WHERE name = 'outbox.evicted'")
    if evicted:
        row.notes.append(f"{evicted} telemetry evicted")


def _workdir(base: Path | None, name: str) -> contextlib.AbstractContextManager[str]:
    if base is not None:
        path = base / name
        path.mkdir(parents=True, exist_ok=True)
        return contextlib.nullcontext(str(path))
    return tempfile.TemporaryDirectory(prefix=f"chaos-{name}-")


# ----- a. kill -9 of the agent ---------------------------------------------------------------------
async def agent_kills(kills: int, *, rate: float = 40.0, seed: int = 1, base: Path | None = None) -> Row:
    """SOS events at ``rate``/s from 4 wearables while the agent is killed ``kills`` times."""
    row = Row("agent kill -9 during SOS stream")
    rng = random.Random(seed)
    with _workdir(base, "kills") as tmp:
        work = Path(tmp)
        async with brokers(work) as (south, north):
            config = write_config(work, south.port, north.port)
            agent = AgentProcess(config)
            try:
                async with Platform(north.port) as platform, Hub(south.port, inflight=1) as hub:
                    agent.start()
                    await hub.wait_online()
                    stop = asyncio.Event()
                    devices = ["W1", "W2", "W3", "W4"]
                    publisher = asyncio.create_task(stream(rate, stop, lambda i: hub.next_sos(devices[i % 4]), hub))
                    checked = 0
                    for _ in range(kills):
                        await asyncio.sleep(rng.uniform(0.05, 1.2))
                        if agent.crashed() is not None:
                            row.failures.append(f"agent exited by itself with {agent.crashed()}")
                        agent.kill()
                        row.injections += 1
                        if agent.db.exists():
                            result = integrity(agent.db)
                            checked += 1
                            if result != "ok":
                                row.failures.append(f"integrity_check after kill {row.injections}: {result}")
                        agent.start()
                    stop.set()
                    await publisher
                    quiet = time.monotonic()
                    keys = set(hub.accepted)
                    await wait_until(lambda: platform.has_all(keys), 60)
                    arrivals = [platform.arrivals[platform.first[k]].t for k in keys if k in platform.first]
                    row.drain_s = max(0.0, max(arrivals, default=quiet) - quiet)
                    await asyncio.sleep(0.3)  # late duplicates
                    tally(row, hub, platform)
                    agent.stop()
                    check_db(row, agent)
                    row.notes.append(f"integrity ok after each of {checked} kills and at the end")
            finally:
                agent.close()
    return row


# ----- b. north broker killed and restarted ----------------------------------------------------------
async def broker_restarts(
    restarts: int, *, persistence: bool, rate: float = 40.0, seed: int = 2, base: Path | None = None
) -> Row:
    """kill -9 of the north (city) broker while SOS alerts flow, then a restart.

    Without persistence the restarted broker has forgotten every subscription, and MQTT drops
    what is published to a topic nobody subscribes to: the outbox cannot help with that. So the
    gateway reaches north through a proxy that holds it off until the platform has subscribed
    again. With persistence (saved after every change) the platform's session and its queued
    messages survive the kill: the platform is kept away for a second after each restart while
    the gateway drains its outbox into the broker.
    """
    label = "north broker kill -9 + restart, " + ("persistence" if persistence else "no persistence")
    row = Row(label)
    rng = random.Random(seed)
    extra = "autosave_interval 1\nautosave_on_changes true\n" if persistence else ""
    with _workdir(base, "broker-p" if persistence else "broker-np") as tmp:
        work = Path(tmp)
        async with (
            brokers(work, north_persistence=persistence, north_extra=extra) as (south, north),
            FlakyProxy(north.port) as proxy,
        ):
            config = write_config(work, south.port, proxy.port)
            agent = AgentProcess(config)
            try:
                async with Platform(north.port) as platform, Hub(south.port, inflight=1) as hub:
                    agent.start()
                    await hub.wait_online()
                    stop = asyncio.Event()
                    devices = ["W1", "W2", "W3", "W4"]
                    publisher = asyncio.create_task(stream(rate, stop, lambda i: hub.next_sos(devices[i % 4]), hub))
                    first_alerts: list[float] = []
                    for _ in range(restarts):
                        await asyncio.sleep(rng.uniform(0.5, 1.5))
                        north.stop(kill=True)
                        if persistence:
                            platform.hold = True  # away from the kill until 1 s after the restart
                        else:
                            proxy.cut()
                        row.injections += 1
                        await asyncio.sleep(rng.uniform(0.2, 1.0))
                        north.start()
                        back = time.monotonic()
                        if persistence:
                            await asyncio.sleep(1.0)  # the gateway drains into the broker
                            platform.hold = False
                        else:
                            await wait_for(platform.subscribed.wait, 15, "platform back")
                            proxy.restore()
                        mark = len(platform.arrivals)
                        if await wait_until(functools.partial(platform.alert_since, mark), 30):
                            found = next(a.t for a in platform.arrivals[mark:] if a.kind == "alert")
                            first_alerts.append(found - back)
                    stop.set()
                    await publisher
                    quiet = time.monotonic()
                    keys = set(hub.accepted)
                    await wait_until(lambda: platform.has_all(keys), 60)
                    arrivals = [platform.arrivals[platform.first[k]].t for k in keys if k in platform.first]
                    row.drain_s = max(0.0, max(arrivals, default=quiet) - quiet)
                    # with persistence the platform is held away for 1 s: no reconnect figure
                    row.first_alert_s = max(first_alerts) if first_alerts and not persistence else None
                    await asyncio.sleep(0.3)
                    tally(row, hub, platform)
                    agent.stop()
                    check_db(row, agent)
                    if persistence:
                        row.notes.append("platform away from each kill to 1 s after the restart")
                    else:
                        row.notes.append("platform resubscribes before the gateway is let back in")
            finally:
                agent.close()
    return row


# ----- c. the uplink down for an hour of accelerated time -----------------------------------------
async def uplink_outage(
    outage_timeline_s: float = 3600.0,
    *,
    speed: float = 60.0,
    timeline_rate: float = 10.0,
    sos_every: int = 25,
    lamps: int = 20,
    around_s: float = 2.0,
    base: Path | None = None,
) -> Row:
    """Lamp states and SOS at ``timeline_rate`` msg/s of timeline while the uplink is cut.

    Real rate = timeline_rate * speed. The uplink (a proxy in front of the north broker) is cut
    for ``outage_timeline_s`` of timeline; publishing then pauses until the agent has queued
    everything it was given (so the whole outage traffic is in the outbox at reconnection),
    the uplink comes back, traffic continues for ``around_s`` real seconds, and we drain.

    Checked: (1) every acknowledged message arrives (after dedupe); (2) Receiver.gaps() is
    empty; (3) alerts first: let Q be the messages published before the uplink came back that
    arrived after it; in arrival order, every alert of Q comes before the first telemetry of Q;
    (4) the first alert after reconnection (reported; the target is 5 s).
    """
    minutes = outage_timeline_s / 60
    row = Row(f"uplink down {minutes:g} min timeline (x{speed:g}) at {timeline_rate:g} msg/s")
    with _workdir(base, "outage") as tmp:
        work = Path(tmp)
        async with brokers(work) as (south, north), FlakyProxy(north.port) as proxy:
            config = write_config(work, south.port, proxy.port, lamps=lamps)
            agent = AgentProcess(config, speed=speed)
            try:
                async with Platform(north.port) as platform, Hub(south.port, inflight=64) as hub:
                    agent.start()
                    await hub.wait_online()
                    devices = ["W1", "W2", "W3", "W4"]

                    def make(i: int) -> Key:
                        if i % sos_every == sos_every - 1:
                            return hub.next_sos(devices[(i // sos_every) % 4])
                        return ("tel", i, f"L{i % lamps + 1}")

                    real_rate = timeline_rate * speed
                    counter = [0]

                    def numbered(i: int) -> Key:
                        counter[0] += 1
                        return make(counter[0])

                    async def phase(seconds: float) -> None:
                        stop = asyncio.Event()
                        task = asyncio.create_task(stream(real_rate, stop, numbered, hub))
                        await asyncio.sleep(seconds)
                        stop.set()
                        await task

                    await phase(around_s)
                    await wait_until(lambda: platform.has_all(_norm(hub.accepted)), 30)
                    proxy.cut()
                    cut_at = time.monotonic()
                    row.injections = 1
                    await phase(outage_timeline_s / speed)
                    # everything acknowledged by south before now must be queued before reconnection
                    sent_before = _norm(hub.accepted)
                    undelivered = {k for k in sent_before if k not in platform.first}
                    queued = await wait_until(
                        lambda: (
                            db_query(agent.db, "SELECT COUNT(*) FROM outbox WHERE link = 'north'") >= len(undelivered)
                        ),
                        120,
                    )
                    if not queued:
                        row.failures.append("the agent did not queue the outage traffic within 120 s")
                    back = time.monotonic()
                    outage_real = back - cut_at
                    proxy.restore()
                    await phase(around_s)
                    quiet = time.monotonic()
                    keys = _norm(hub.accepted)
                    await wait_until(lambda: platform.has_all(keys), 120)
                    done = max(
                        (platform.arrivals[platform.first[k]].t for k in keys if k in platform.first), default=quiet
                    )
                    row.drain_s = max(0.0, done - back)
                    after = [a for a in platform.arrivals if a.t >= back and a.kind == "alert"]
                    row.first_alert_s = after[0].t - back if after else None
                    await asyncio.sleep(0.3)
                    tally(row, hub, platform, keys)
                    gaps = platform.receiver.gaps()
                    if gaps:
                        row.failures.append(f"seq gaps: { {k[1]: v[:5] for k, v in gaps.items()} }")
                    backlog = [
                        k for k in sent_before if k in platform.first and platform.arrivals[platform.first[k]].t >= back
                    ]
                    alert_idx = [platform.first[k] for k in backlog if k[0] == "sos"]
                    tel_idx = [platform.first[k] for k in backlog if k[0] == "tel"]
                    if not alert_idx or not tel_idx:
                        row.failures.append("no backlog of both alerts and telemetry to compare")
                    elif max(alert_idx) > min(tel_idx):
                        late = sum(1 for i in alert_idx if i > min(tel_idx))
                        row.failures.append(f"{late} backlog alerts arrived after backlog telemetry")
                    else:
                        row.notes.append(f"backlog {len(alert_idx)} alerts all before its {len(tel_idx)} telemetry")
                    row.notes.append(f"outage {outage_real:.1f}s real = {outage_real * speed / 60:.0f} min timeline")
                    if row.first_alert_s is not None and row.first_alert_s > 5.0:
                        row.notes.append("first alert slower than the 5 s target")
                    agent.stop()
                    check_db(row, agent)
            finally:
                agent.close()
    return row


def _norm(accepted: dict[Key, float]) -> set[Key]:
    """Telemetry keys carry the lamp for publishing; the platform knows them by marker only."""
    return {k if k[0] == "sos" else ("tel", k[1]) for k in accepted}


# ----- d. connection dropped right after a QoS 1 PUBLISH -------------------------------------------
async def publish_drops(drops: int, *, rate: float = 20.0, base: Path | None = None) -> Row:
    row = Row("proxy drops link after PUBLISH, before PUBACK")
    with _workdir(base, "drops") as tmp:
        work = Path(tmp)
        async with brokers(work) as (south, north), FlakyProxy(north.port) as proxy:
            config = write_config(work, south.port, proxy.port)
            agent = AgentProcess(config)
            try:
                async with Platform(north.port) as platform, Hub(south.port, inflight=1) as hub:
                    agent.start()
                    await hub.wait_online()
                    proxy.drop_after_publishes(drops, "/alert")
                    stop = asyncio.Event()
                    devices = ["W1", "W2", "W3", "W4"]
                    publisher = asyncio.create_task(stream(rate, stop, lambda i: hub.next_sos(devices[i % 4]), hub))
                    await wait_until(lambda: proxy.drops_pending == 0, 30 + drops * 2.0)
                    await asyncio.sleep(0.5)
                    stop.set()
                    await publisher
                    row.injections = proxy.drops
                    quiet = time.monotonic()
                    keys = set(hub.accepted)
                    await wait_until(lambda: platform.has_all(keys), 60)
                    arrivals = [platform.arrivals[platform.first[k]].t for k in keys if k in platform.first]
                    row.drain_s = max(0.0, max(arrivals, default=quiet) - quiet)
                    await asyncio.sleep(0.3)
                    tally(row, hub, platform)
                    if row.injections < drops:
                        row.failures.append(f"only {row.injections} of {drops} drops injected")
                    agent.stop()
                    check_db(row, agent)
            finally:
                agent.close()
    return row


# ----- e. serial port vanishing mid-frame -----------------------------------------------------------
async def serial_vanish(cuts: int, *, base: Path | None = None) -> Row:
    """An SOS frame cut in the middle by the port vanishing; the port returns, the dongle
    retransmits until ACKed (and once more, as if the ACK were lost): delivered exactly once."""
    from edge_agent.codec import frames
    from edge_agent.transports.dongle_link import DongleLink, DongleSettings

    row = Row("serial port vanishes mid SOS frame")
    with _workdir(base, "serial") as tmp:
        path = Path(tmp) / "ttyDONGLE"
        pty = _Pty(path)
        delivered: dict[int, int] = {}
        started = time.monotonic()
        try:
            settings = DongleSettings(port=str(path), reopen_min=0.02, reopen_max=0.2)
            async with DongleLink(settings) as link:
                await link.wait_connected(10)
                await pty.send_until_acked(frames.encode(frames.HELLO, 1, 7, b"\x01\x02\x03\x04"), 1, frames)

                async def consume() -> None:
                    while True:
                        msg = await link.get()
                        delivered[msg.seq] = delivered.get(msg.seq, 0) + 1

                consumer = asyncio.create_task(consume())
                for seq in range(2, cuts + 2):
                    frame = frames.encode(frames.SOS, seq, 7, bytes([80]))
                    pty.write(frame[: len(frame) // 2])
                    await asyncio.sleep(0.01)
                    reopens = link.stats.reopens
                    pty.unplug()
                    row.injections += 1
                    await wait_for(functools.partial(_more, link.stats, reopens), 10, "link noticed the loss")
                    pty.replug()
                    await link.wait_connected(10)
                    row.sent += 1
                    if not await pty.send_until_acked(frame, seq, frames):
                        row.failures.append(f"SOS {seq} never acked")
                    pty.write(frame)  # the dongle did not see the ACK: a retransmission
                await asyncio.sleep(0.3)
                consumer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await consumer
                row.delivered = sum(1 for seq in range(2, cuts + 2) if delivered.get(seq))
                row.lost = row.sent - row.delivered
                row.duplicates = link.stats.duplicates
                twice = [s for s, n in delivered.items() if n > 1]
                if twice:
                    row.failures.append(f"delivered more than once: {twice}")
                row.drain_s = time.monotonic() - started
                row.notes.append("duplicates = retransmissions ACKed again and dropped by seq")
        finally:
            pty.close()
    return row


def _more(stats: Any, before: int) -> bool:
    return int(stats.reopens) > before


class _Pty:
    """The dongle's end of a pty whose slave appears at ``path`` (like /dev/serial/by-id)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.master = -1
        self.slave = -1
        self._acks = bytearray()
        self.replug()

    def replug(self) -> None:
        import tty

        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        tmp = self.path.with_name(self.path.name + ".new")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(os.ttyname(self.slave))
        tmp.replace(self.path)

    def unplug(self) -> None:
        for fd in (self.master, self.slave):
            if fd >= 0:
                os.close(fd)
        self.master = self.slave = -1
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def close(self) -> None:
        self.unplug()

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    async def send_until_acked(self, frame: bytes, seq: int, frames: Any, timeout: float = 10.0) -> bool:
        decoder = frames.Decoder()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.write(frame)
            until = time.monotonic() + 0.2
            while time.monotonic() < until:
                try:
                    data = os.read(self.master, 4096)
                except BlockingIOError:
                    data = b""
                for result in decoder.feed(data) if data else []:
                    if not isinstance(result, str) and result.kind == frames.ACK and result.seq == seq:
                        return True
                await asyncio.sleep(0.01)
        return False


# ----- the run ------------------------------------------------------------------------------------
def render(rows: list[Row], title: str) -> Table:
    table = Table(title=title)
    columns = ("fault", "injections", "sent", "delivered", "lost", "duplicates", "time to drain")
    for name in (*columns, "first alert after reconnect", "checks"):
        table.add_column(name, justify="left" if name in ("fault", "checks") else "right")
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


def plan(quick: bool, kills: int | None) -> Plan:
    if quick:
        return Plan(kills=kills or 12, restarts=3, outage_timeline_s=600.0, speed=60.0, drops=15, cuts=5)
    return Plan(kills=kills or 200, restarts=10, outage_timeline_s=3600.0, speed=60.0, drops=100, cuts=50)


async def run_all(p: Plan, only: str, *, seed: int, base: Path | None, deadline: float) -> list[Row]:
    jobs: list[tuple[str, Callable[[], Awaitable[Row]]]] = [
        ("a", lambda: agent_kills(p.kills, seed=seed, base=base)),
        ("b", lambda: broker_restarts(p.restarts, persistence=False, seed=seed, base=base)),
        ("b", lambda: broker_restarts(p.restarts, persistence=True, seed=seed, base=base)),
        ("c", lambda: uplink_outage(p.outage_timeline_s, speed=p.speed, base=base)),
        ("d", lambda: publish_drops(p.drops, base=base)),
        ("e", lambda: serial_vanish(p.cuts, base=base)),
    ]
    rows = []
    for letter, job in jobs:
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
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chaos", description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="the short CI variant (about a minute)")
    parser.add_argument("--kills", type=int, default=None, help="agent kills in scenario a (default 200, quick 12)")
    parser.add_argument("--only", default="abcde", help="scenarios to run, e.g. 'ac' (default abcde)")
    parser.add_argument("--seed", type=int, default=1, help="random seed for kill and restart moments")
    parser.add_argument("--keep", type=Path, default=None, help="keep work dirs (logs, databases) under this dir")
    parser.add_argument("--deadline", type=float, default=900.0, help="seconds allowed per scenario")
    args = parser.parse_args(argv)
    p = plan(args.quick, args.kills)
    started = time.monotonic()
    rows = asyncio.run(run_all(p, args.only, seed=args.seed, base=args.keep, deadline=args.deadline))
    title = f"chaos {'--quick' if args.quick else 'full'} run, {time.monotonic() - started:.0f} s"
    console.print(render(rows, title))
    bad = [r.fault for r in rows if not r.ok]
    if bad:
        console.print(f"[red]FAILED: {', '.join(bad)}[/red]")
        return 1
    console.print("[green]0 lost in every scenario; every check passed[/green]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
