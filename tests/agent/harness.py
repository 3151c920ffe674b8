"""Test harness: a gateway config, an observer (on a real broker or an in-process bus), and `eventually`."""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiomqtt
import msgspec

from devtools.gateway_config import POLICY_HEAD, SOS_RULE, write_gateway_config  # noqa: F401 (re-exported to tests)
from edge_agent.agent.app import Agent
from edge_agent.clock import Clock
from edge_agent.config import GatewayConfig, load_config
from edge_agent.policy.bundle_sign import build_bundle, sign_bundle
from edge_agent.policy.keys import generate_private_key, key_id, public_key_to_pem
from edge_agent.transports.inprocess import InProcessBus, InProcessPeer
from edge_agent.transports.link import LinkFactory
from edge_agent.transports.mqtt_client import NO_DELAY

T0 = datetime(2026, 1, 1, 8, 0, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()  # a winter morning: lamps off


def write_gateway(
    tmp_path: Path, gw: str, port: int, rules: str, *, trust: bool = False, extra: dict[str, Any] | None = None
) -> GatewayConfig:
    """The test village (devtools/gateway_config.py) on one broker for south and north; ``extra``:
    more tables of the gateway file (``{"http": {...}}``)."""
    url = f"mqtt://127.0.0.1:{port}"
    path = write_gateway_config(
        tmp_path,
        gw,
        south_url=url,
        north_url=url,
        policy_text=POLICY_HEAD + rules,
        trust_keys=["centre.pub"] if trust else None,
        extra=extra,
    )
    return load_config(path)


def write_trusting_gateway(tmp_path: Path, gw: str, port: int, rules: str) -> tuple[GatewayConfig, Any]:
    """``write_gateway`` plus a centre key the gateway trusts; returns the config and the key."""
    key = generate_private_key()
    (tmp_path / "centre.pub").write_bytes(public_key_to_pem(key.public_key()))
    return write_gateway(tmp_path, gw, port, rules, trust=True), key


def sign_policy(
    key: Any,
    payload: bytes,
    version: int,
    now: float,
    gateways: tuple[str, ...] = ("*",),
    district: str = "naxi",
    expires: float | None = None,
) -> bytes:
    """A signed policy bundle as the centre makes it, valid from a minute before ``now``."""
    bundle = build_bundle(
        payload,
        kind="policy",
        district=district,
        gateways=list(gateways),
        version=version,
        issued_at=int(now - 60),
        not_before=int(now - 60),
        expires=int(now + 86400 * 30 if expires is None else expires),
        key_id=key_id(key.public_key()),
        force=True,
    )
    return sign_bundle(bundle, key)


async def eventually(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Wait (real time) until predicate() is truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@dataclass
class Seen:
    topic: str
    payload: dict[str, Any] | bytes


@dataclass
class Observer:
    """A plain MQTT client on the gateway's topic root: what a device or the platform sees."""

    host: str
    port: int
    root: str
    messages: list[Seen] = field(default_factory=list)
    client: aiomqtt.Client | InProcessPeer | None = None

    def on(self, suffix: str) -> list[dict[str, Any]]:
        topic = f"{self.root}/{suffix}"
        return [m.payload for m in self.messages if m.topic == topic and isinstance(m.payload, dict)]

    def matching(self, part: str) -> list[Seen]:
        return [m for m in self.messages if part in m.topic]

    async def publish(self, suffix: str, payload: dict[str, Any] | bytes, qos: int = 1, retain: bool = False) -> None:
        assert self.client is not None
        data = payload if isinstance(payload, bytes) else msgspec.json.encode({"v": 1, **payload})
        await self.client.publish(f"{self.root}/{suffix}", data, qos=qos, retain=retain)


def _seen(topic: str, raw: bytes) -> Seen:
    try:
        decoded: dict[str, Any] | bytes = msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        decoded = raw
    return Seen(topic, decoded)


@contextlib.asynccontextmanager
async def observing_bus(bus: InProcessBus, root: str) -> AsyncIterator[Observer]:
    """``observing`` on an in-process bus (edge_agent/transports/inprocess.py): no broker."""
    observer = Observer("in-process", 0, root)
    observer.client = bus.peer([f"{root}/#"], lambda topic, raw: observer.messages.append(_seen(topic, raw)))
    yield observer


@dataclass
class Village:
    """Where a test's gateway and its observer meet: an in-process bus (``links`` is the bus)
    or a real broker (``links`` is None: the agent's own MQTT links to ``port``)."""

    port: int
    links: LinkFactory | None
    bus: InProcessBus | None = None
    host: str = "127.0.0.1"

    def observing(self, root: str) -> contextlib.AbstractAsyncContextManager[Observer]:
        if self.bus is not None:
            return observing_bus(self.bus, root)
        return observing(self.host, self.port, root)


def in_process_village() -> Village:
    bus = InProcessBus()
    return Village(port=1, links=bus, bus=bus)  # the config's broker url is never dialled


@contextlib.asynccontextmanager
async def observing(host: str, port: int, root: str) -> AsyncIterator[Observer]:
    observer = Observer(host, port, root)
    ready = asyncio.Event()

    async def listen() -> None:
        async with aiomqtt.Client(host, port, socket_options=NO_DELAY) as client:
            observer.client = client
            await client.subscribe(f"{root}/#", qos=1)
            ready.set()
            async for message in client.messages:
                raw = message.payload if isinstance(message.payload, bytes) else b""
                observer.messages.append(_seen(str(message.topic), raw))

    task = asyncio.create_task(listen())
    await asyncio.wait_for(ready.wait(), 10)
    try:
        yield observer
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def running(
    config: GatewayConfig, clock: Clock, timeout: float = 20.0, *, links: LinkFactory | None = None
) -> AsyncIterator[Agent]:
    """A real agent on ``config`` (on the configured brokers, or on ``links``: an in-process
    bus), ready (its south link up, and its north link too when it goes to the same broker)
    within ``timeout`` s, or the error that ended its run; cancelled on the way out."""
    agent = Agent(config, clock, links=links)
    task = asyncio.create_task(agent.run())
    try:
        ready = asyncio.create_task(agent.ready.wait())
        done, _ = await asyncio.wait({ready, task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            ready.cancel()
            task.result()  # raises the agent's own error
        if ready not in done:
            ready.cancel()
            raise AssertionError(f"agent not ready within {timeout:g} s")
        north, south = agent.north, agent.south
        if north is not None and south is not None and north.address == south.address:
            # the uplink goes to the broker the south link already reached: subscribed before
            # the test publishes, so a non-retained message to it is not lost to the race
            await north.wait_connected(timeout)
        yield agent
    finally:
        task.cancel()
        stopped, _ = await asyncio.wait({task}, timeout=30)
        if not stopped:  # a hang becomes a failure that says where every task was
            stacks = io.StringIO()
            for other in asyncio.all_tasks():
                other.print_stack(file=stacks)
            raise AssertionError(f"the agent did not stop within 30 s of its cancellation:\n{stacks.getvalue()}")
        with contextlib.suppress(asyncio.CancelledError):
            await task
