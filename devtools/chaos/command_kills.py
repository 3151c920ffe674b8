"""g. kill -9 of the agent while responders acknowledge alerts (inbound commands).

Owns: one scenario on the ``GatewayScenario`` skeleton (shipped layout): SOS from the MQTT
wearables at ``rate``; the rule pages the village doctor (``dr-wang``, the example's
``village_doctor``) through the chain ``medical``; a responder client, logged in on the village
LAN listener as ``dr-wang``, acknowledges each alert the moment its page arrives
(``responder/dr-wang/ack``, ``{"v":1,"alert_id":...}``, QoS 1). An ack is *accepted* when the
south broker PUBACKed it. Meanwhile the agent is killed -9 ``kills`` times (seeded: half at a
random moment, half 0-30 ms after an ack was accepted, i.e. while the gateway is handling it)
and restarted at once; acks published while it is down wait in its persistent south session.

Pass: every accepted ack ends with the alert ``acknowledged`` in the store and an
``acknowledged`` alert message at the platform, under one msg_id (0 lost); every SOS the south
broker accepted reached the platform (the skeleton's tally); ``PRAGMA integrity_check`` ok
after every kill and at the end. Figures: sent = accepted acks, delivered = acks seen through,
duplicates = copies the platform's Receiver dropped by msg_id (redeliveries after a kill).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import msgspec

from devtools.chaos.clients import stream
from devtools.chaos.crash import Crash, KillNine, crash_notes
from devtools.chaos.harness import SOS_MESSAGE, TOPIC_ROOT, WEARABLES, AgentProcess, Key, integrity, wait_until
from devtools.chaos.scenario import GatewayScenario, Rig, Row
from edge_agent.transports.mqtt_client import NO_DELAY, QUIET_LOG

RESPONDER = "dr-wang"  # the example's village_doctor

COMMAND_POLICY = Path(__file__).with_name("policy-commands.toml")


def alert_statuses(db: Path) -> dict[str, str]:
    """alert_id -> status in the gateway's store."""
    if not db.exists():
        return {}
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return {str(a): str(s) for a, s in con.execute("SELECT alert_id, status FROM alerts")}
    except sqlite3.OperationalError:
        return {}
    finally:
        con.close()


class Responder:
    """The doctor's phone on the south broker: acks every page at once (QoS 1)."""

    def __init__(self, port: int, password: str, tls: Any) -> None:
        self.port = port
        self.password = password
        self.tls = tls
        self.pages = 0
        self.accepted: dict[str, float] = {}  # alert_id -> when the broker PUBACKed our ack
        self.resolved: dict[str, float] = {}  # alert_id -> when the broker PUBACKed our resolve
        self.failed = 0
        self.new_ack = asyncio.Event()
        self._acking: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stack = contextlib.AsyncExitStack()
        self.client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Responder:
        self.client = await self._stack.enter_async_context(
            aiomqtt.Client(
                "127.0.0.1",
                self.port,
                identifier=f"chaos-{RESPONDER}-{uuid.uuid4().hex[:8]}",
                username=RESPONDER,
                password=self.password,
                tls_context=self.tls,
                max_inflight_messages=64,
                socket_options=NO_DELAY,
                logger=QUIET_LOG,
            )
        )
        await self.client.subscribe(f"{TOPIC_ROOT}/responder/{RESPONDER}/alert", qos=1)
        self._task = asyncio.create_task(self._listen())
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in (self._task, *self._tasks):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._stack.aclose()

    async def _listen(self) -> None:
        assert self.client is not None
        with contextlib.suppress(aiomqtt.MqttError):
            async for message in self.client.messages:
                self.pages += 1
                try:
                    body = msgspec.json.decode(message.payload if isinstance(message.payload, bytes) else b"")
                except msgspec.DecodeError:
                    continue
                alert_id = body.get("alert_id") if isinstance(body, dict) else None
                if isinstance(alert_id, str) and alert_id not in self._acking:
                    self._acking.add(alert_id)
                    task = asyncio.create_task(self._ack(alert_id))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)

    async def _ack(self, alert_id: str) -> None:
        assert self.client is not None
        payload = msgspec.json.encode({"v": 1, "alert_id": alert_id})
        try:
            await self.client.publish(f"{TOPIC_ROOT}/responder/{RESPONDER}/ack", payload, qos=1, timeout=20)
        except aiomqtt.MqttError:
            self.failed += 1
            self._acking.discard(alert_id)  # the next copy of the page tries again
            return
        self.accepted[alert_id] = time.monotonic()
        self.new_ack.set()
        # back at base: the responder is free for the next incident (the dispatch rule)
        try:
            await self.client.publish(f"{TOPIC_ROOT}/responder/{RESPONDER}/resolved", payload, qos=1, timeout=20)
        except aiomqtt.MqttError:
            return  # the resolve timeout frees the responder instead
        self.resolved[alert_id] = time.monotonic()


@dataclass
class CommandKills(GatewayScenario):
    """SOS at ``rate``/s, each page acked by the responder, while the agent is killed ``kills`` times."""

    kills: int
    rate: float = 10.0
    seed: int = 1
    checked: int = 0
    after_ack: int = 0
    settle_s: float | None = None
    statuses: dict[str, dict[str, set[str]]] = field(default_factory=dict)  # alert_id -> status -> msg_ids
    alert_ids: dict[Key, set[str]] = field(default_factory=dict)  # SOS -> alert_ids seen north
    responder: Responder | None = None
    drain_timeout: float = 90.0
    crash: Crash = field(default_factory=KillNine)
    name = "command-kills"
    settings = ("policy: devtools/chaos/policy-commands.toml (the SOS alert pages dr-wang, chain medical)",)

    def title(self) -> str:
        return f"{self.crash.what} during responder acks (inbound commands)"

    def tune(self, doc: dict[str, Any]) -> None:
        """The row's rule file: the SOS alert pages the village doctor (chain medical)."""
        doc["gateway"]["policy"] = str(COMMAND_POLICY)

    async def drive(self, rig: Rig) -> None:
        self._watch(rig)
        layout = rig.layout
        assert layout is not None
        hub = rig.hub
        async with Responder(layout.south.ports[1], layout.passwords[RESPONDER], layout.tls()) as responder:
            self.responder = responder
            stop = asyncio.Event()
            make = lambda i: hub.next_sos(WEARABLES[i % len(WEARABLES)])  # noqa: E731
            publisher = asyncio.create_task(stream(self.rate, stop, make, hub))
            try:
                await self.inject(rig)
            finally:
                stop.set()
                await publisher
            quiet = time.monotonic()
            done = await wait_until(lambda: self._settled(rig), self.drain_timeout)
            self.settle_s = time.monotonic() - quiet  # the skeleton's _drain (SOS alerts) runs after this
            if not done:
                rig.row.failures.append(f"not settled within {self.drain_timeout:.0f}s of the last kill")
            await asyncio.sleep(0.3)  # late copies

    def _watch(self, rig: Rig) -> None:
        """Also record each north alert message's status by alert_id (through the platform's
        own Receiver, which still counts duplicates)."""
        platform = rig.platform
        original = platform._on

        def on(topic: str, raw: Any) -> None:
            original(topic, raw)
            if not topic.endswith("/alert") or not isinstance(raw, bytes):
                return
            with contextlib.suppress(msgspec.DecodeError):
                body = msgspec.json.decode(raw)
                if isinstance(body, dict) and isinstance(body.get("alert_id"), str):
                    by_status = self.statuses.setdefault(body["alert_id"], {})
                    by_status.setdefault(str(body.get("status")), set()).add(str(body.get("msg_id")))
                    match = SOS_MESSAGE.match(str(body.get("message", "")))
                    if match:
                        key = ("sos", match.group(2), int(match.group(1)))
                        self.alert_ids.setdefault(key, set()).add(body["alert_id"])

        platform._on = on  # type: ignore[method-assign]

    def _settled(self, rig: Rig) -> bool:
        """Every accepted SOS alerted north, every page acked, every accepted ack seen through."""
        responder = self.responder
        assert responder is not None
        if not rig.platform.has_all(set(rig.hub.accepted)):
            return False
        if len(responder.accepted) < len(self.statuses) or responder._tasks:
            return False
        return all("acknowledged" in self.statuses.get(a, {}) for a in responder.accepted)

    async def inject(self, rig: Rig) -> None:
        rng = random.Random(self.seed)
        agent, row = rig.agent, rig.row
        responder = self.responder
        assert responder is not None
        for _ in range(self.kills):
            if rng.random() < 0.5:
                await asyncio.sleep(rng.uniform(0.2, 1.0))
            else:
                responder.new_ack.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(responder.new_ack.wait(), 5.0)
                    self.after_ack += 1
                await asyncio.sleep(rng.uniform(0.0, 0.03))
            if agent.crashed() is not None:
                row.failures.append(f"agent exited by itself with {agent.crashed()}")
            self.crash.strike(agent)
            row.injections += 1
            self._integrity(agent, row)
            agent.start()

    def _integrity(self, agent: AgentProcess, row: Row) -> None:
        if agent.db.exists():
            result = integrity(agent.db)
            self.checked += 1
            if result != "ok":
                row.failures.append(f"integrity_check after {self.crash.what} {row.injections}: {result}")

    def keys(self, rig: Rig) -> set[Key]:
        return set(rig.hub.accepted)

    def check(self, rig: Rig) -> None:
        """Replace the SOS figures of the tally by the acks' (the SOS ones go to the notes)."""
        row, responder = rig.row, self.responder
        assert responder is not None
        sos_sent, sos_delivered = row.sent, row.delivered
        row.drain_s = self.settle_s  # time to drain = until every accepted ack was seen through
        stored = alert_statuses(rig.agent.db)
        accepted = sorted(responder.accepted)
        through = [
            a
            for a in accepted
            if stored.get(a) in ("acknowledged", "resolved") and "acknowledged" in self.statuses.get(a, {})
        ]
        row.sent = len(accepted)
        row.delivered = len(through)
        row.lost += row.sent - row.delivered
        missing = sorted(set(accepted) - set(through))
        if missing:
            detail = ", ".join(
                f"{a} (store {stored.get(a)}, north {sorted(self.statuses.get(a, {}))})" for a in missing[:3]
            )
            row.failures.append(f"{len(missing)} accepted acks not seen through: {detail}")
        # the skeleton counts an SOS under two msg_ids as a double alert; here every alert has
        # two messages (raised, then acknowledged): the same checks, per alert and status
        row.failures[:] = [f for f in row.failures if not f.endswith("SOS alerted under two msg_ids")]
        twice = [(a, st) for a, by in self.statuses.items() for st, ids in by.items() if len(ids) > 1]
        if twice:
            row.failures.append(f"{len(twice)} alert messages under two msg_ids (a status raised twice): {twice[:3]}")
        doubles = [k for k, ids in self.alert_ids.items() if len(ids) > 1]
        if doubles:
            row.failures.append(f"{len(doubles)} SOS alerted under two alert_ids: {doubles[:3]}")
        unacked = [a for a, s in stored.items() if s not in ("acknowledged", "resolved")]
        if unacked:
            row.failures.append(f"{len(unacked)} alerts never acknowledged (page or ack lost?): {unacked[:3]}")
        unresolved = [a for a in responder.resolved if stored.get(a) != "resolved"]
        if unresolved:
            row.failures.append(f"{len(unresolved)} accepted resolves not applied: {unresolved[:3]}")
        row.notes.append(
            f"{sos_sent} SOS accepted by south, {sos_delivered} alerted north; {len(stored)} alerts,"
            f" {responder.pages} pages (copies included); {len(responder.resolved)} resolves accepted;"
            f" {self.after_ack} {self.crash.noun} 0-30 ms after an accepted ack"
        )
        if responder.failed:
            row.notes.append(f"{responder.failed} ack publishes not PUBACKed (sent again on the next page copy)")

    def notes(self, rig: Rig) -> list[str]:
        return [f"integrity ok after each of {self.checked} {self.crash.noun} and at the end", *crash_notes(self.crash)]


async def command_kills(kills: int, *, seed: int = 1, base: Path | None = None, crash: Crash | None = None) -> Row:
    """kill -9 of the agent (or a power cut: ``crash``) ``kills`` times while a responder
    acknowledges every alert page: every accepted ack ends acknowledged in the store and at
    the platform."""
    return await CommandKills(kills, seed=seed, crash=crash or KillNine()).run(base)
