"""The chaos suite's actors: the gateway process, the city platform, the wearable hub, brokers.

Owns: ``AgentProcess`` (`edge-agent run` as a child we can kill -9), ``Platform`` (the city on
the north broker: a persistent QoS 1 session and a ``Receiver``), ``Hub`` (wearables and lamps
publishing on the south broker; "sent" is what the south broker acknowledged), the two
Mosquitto brokers of a scenario, the chaos gateway config, the publishing stream, SQLite
probes and the wait helpers. Loopback only; every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import aiomqtt
import msgspec

from devtools.gateway_config import numbered, write_gateway_config
from devtools.mosquitto import MosquittoProcess
from edge_agent.receiver import Receiver
from edge_agent.transports.mqtt import NO_DELAY, QUIET_LOG

ROOT = Path(__file__).resolve().parents[2]
GW = "chaos-gw"
TOPIC_ROOT = f"district/v1/{GW}"
SOS_MESSAGE = re.compile(r"^SOS (\d+) from (\S+)$")
WEARABLES = ("W1", "W2", "W3", "W4")

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

Key = tuple[Any, ...]  # ("sos", device, seq) or ("tel", marker) (("tel", marker, lamp) when published)


def write_config(work: Path, south: int, north: int, *, lamps: int = 0, wearables: int = 4) -> Path:
    """The chaos gateway: ``lamps`` village lamps, ``wearables`` wearables, one doctor; the
    default reconnect backoff (0.5 s doubling, capped at 4 s with full jitter) is on test; a
    512 MB outbox, so no eviction (a gap in seq would then be a documented eviction)."""
    return write_gateway_config(
        work,
        GW,
        policy_text=POLICY,
        south_url=f"mqtt://127.0.0.1:{south}",
        north_url=f"mqtt://127.0.0.1:{north}",
        lamps=numbered("L", lamps, group="village", zone="square"),
        wearables=numbered("W", wearables, zone="lane"),
        cameras=(),
        responders=[{"id": "doc1", "role": "village_doctor"}],
        limits={"outbox_max_mb": 512},
    )


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
    """The south (village) and north (city) Mosquitto of one scenario, each with its own dir."""
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


def workdir(base: Path | None, name: str) -> contextlib.AbstractContextManager[str]:
    """``base/name`` kept after the run (``--keep``), else a temporary directory."""
    if base is not None:
        path = base / name
        path.mkdir(parents=True, exist_ok=True)
        return contextlib.nullcontext(str(path))
    return tempfile.TemporaryDirectory(prefix=f"chaos-{name}-")


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
