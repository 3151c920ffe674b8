"""The chaos suite's MQTT clients: the city platform on the north broker (a persistent QoS 1
session deduplicating by ``msg_id``, what arrived and when) and the devices' hub on the village
broker (publishes that count as accepted once the broker's PUBACK is back), and ``stream``,
which drives the hub at a steady rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiomqtt
import msgspec

from devtools.chaos.harness import LAMPS, SOS_MESSAGE, TOPIC_ROOT, WEARABLES, Key, wait_for
from edge_agent.cli.acl import CENTRE
from edge_agent.receiver import Receiver
from edge_agent.transports.mqtt_client import NO_DELAY, QUIET_LOG


@dataclass
class Arrival:
    t: float
    key: Key | None
    kind: str  # "alert" | "telemetry"
    new: bool  # False: a duplicate (same msg_id) dropped by the Receiver


class Platform:
    """The city platform on the north broker: a persistent QoS 1 session, a Receiver."""

    def __init__(self, port: int, *, username: str | None = None, password: str | None = None) -> None:
        self.port = port
        self.username = username
        self.password = password
        self.receiver = Receiver()
        self.arrivals: list[Arrival] = []
        self.first: dict[Key, int] = {}  # key -> index of its first arrival
        self.ids: dict[Key, set[str]] = {}  # key -> msg_ids seen (more than one: a double alert)
        self.alert_ids: dict[Key, set[str]] = {}  # SOS key -> alert ids (more than one: raised twice)
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
                username=self.username,
                password=self.password,
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
            if kind == "alert":
                self.alert_ids.setdefault(key, set()).add(str(body.get("alert_id")))
            self.first.setdefault(key, index)

    def alert_since(self, mark: int) -> bool:
        return any(a.kind == "alert" for a in self.arrivals[mark:])

    def has_all(self, keys: set[Key]) -> bool:
        return all(k in self.first for k in keys)

    def doubles(self) -> int:
        """Keys that came out under more than one msg_id (an SOS alerted twice)."""
        return sum(1 for ids in self.ids.values() if len(ids) > 1)

    def raised_twice(self) -> int:
        """SOS that came out under more than one alert id (raised twice)."""
        return sum(1 for ids in self.alert_ids.values() if len(ids) > 1)


class Hub:
    """Wearables and lamps on the south broker, each as its own user (its id) on the village
    LAN listener (TLS) when ``users`` are given; also the district centre ("centre"), which
    watches the gateway's status and its local alarms. "sent" is what the broker acknowledged."""

    def __init__(
        self,
        port: int,
        *,
        inflight: int = 32,
        users: Mapping[str, str] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.port = port
        self.users = dict(users or {})
        self.tls = tls
        self.accepted: dict[Key, float] = {}  # key -> when the south broker acknowledged it
        self.failed = 0
        self.status = b""
        self.alarms: list[dict[str, Any]] = []  # the gateway's local alarms (topic alarm)
        self._seqs: dict[str, int] = {}
        self._sem = asyncio.Semaphore(inflight)
        self._stack = contextlib.AsyncExitStack()
        self.client: aiomqtt.Client | None = None  # the centre's (status, alarms)
        self.devices: dict[str, aiomqtt.Client] = {}
        self._task: asyncio.Task[None] | None = None

    def _client(self, user: str | None) -> aiomqtt.Client:
        return aiomqtt.Client(
            "127.0.0.1",
            self.port,
            identifier=f"chaos-{user or 'hub'}-{uuid.uuid4().hex[:8]}",
            username=user,
            password=self.users.get(user) if user else None,
            tls_context=self.tls,
            max_inflight_messages=64,
            socket_options=NO_DELAY,
            logger=QUIET_LOG,
        )

    async def __aenter__(self) -> Hub:
        self.client = await self._stack.enter_async_context(self._client(CENTRE if self.users else None))
        for device in (*WEARABLES, *LAMPS) if self.users else ():
            self.devices[device] = await self._stack.enter_async_context(self._client(device))
        await self.client.subscribe(f"{TOPIC_ROOT}/status", qos=1)
        await self.client.subscribe(f"{TOPIC_ROOT}/alarm", qos=1)
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
                if not isinstance(message.payload, bytes):
                    continue
                if str(message.topic).endswith("/alarm"):
                    with contextlib.suppress(msgspec.DecodeError):
                        body = msgspec.json.decode(message.payload)
                        if isinstance(body, dict):
                            self.alarms.append({**body, "_t": time.monotonic()})
                else:
                    self.status = message.payload

    def alarm_reasons(self) -> set[str]:
        return {str(a.get("reason")) for a in self.alarms}

    async def wait_online(self, timeout: float = 30) -> None:
        await wait_for(lambda: self.status == b"online", timeout, "gateway online on the south broker")

    def next_sos(self, device: str) -> Key:
        seq = self._seqs.get(device, 0) + 1
        self._seqs[device] = seq
        return ("sos", device, seq)

    async def send(self, key: Key) -> None:
        """Publish one SOS or lamp state (QoS 1) as its device; record it once the south broker acked it."""
        assert self.client is not None
        if key[0] == "sos":
            device = key[1]
            topic = f"{TOPIC_ROOT}/wearable/{key[1]}/event"
            body: dict[str, Any] = {"v": 1, "event": "sos", "seq": key[2]}
        else:
            marker, device = key[1], key[2]
            topic = f"{TOPIC_ROOT}/lamp/{key[2]}/state"
            body = {"v": 1, "on": True, "level": 50, "power_w": 40.0, "energy_wh": marker}
        client = self.devices.get(device, self.client)
        async with self._sem:
            try:
                await client.publish(topic, msgspec.json.encode(body), qos=1, timeout=20)
            except aiomqtt.MqttError:
                self.failed += 1
                return
        self.accepted[key] = time.monotonic()


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
