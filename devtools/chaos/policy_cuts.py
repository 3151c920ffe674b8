"""Power cuts (or kill -9) of the gateway during a policy install stream, with SOS flowing.

Owns: one scenario on the ``GatewayScenario`` skeleton (shipped layout plus ``[trust] keys``
= a key made for the run): the city centre (user "centre" on the north broker) publishes
signed policy bundles v1, v2, ... (retained, QoS 1, as the platform does) to the gateway's
``policy`` topic, the next one as soon as the previous was acknowledged on ``policy/ack``;
the default SOS stream runs meanwhile. The agent is crashed ``cuts`` times (``crash``; seeded:
half at a random moment, half 0-30 ms after an acknowledgement arrived) and restarted at once.

After every crash, with the agent down, read from its store: ``PRAGMA integrity_check`` ok and
the active policy version (``policy_active``) >= the highest version the gateway had
acknowledged (an ack is published only after the bundle's acceptance is fsynced: a cut may
leave a newer, accepted but not yet acknowledged version active, never an older one) and <=
the highest published. At the end: the active version is the last published and acknowledged;
no bundle refused; the skeleton's tally of the SOS (0 lost, none raised twice).

Must not import: edge_agent.agent (the signing side only: edge_agent.policy).
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

from devtools.chaos.crash import Crash, KillNine, crash_notes
from devtools.chaos.harness import GW, POLICY, TOPIC_ROOT, Layout, integrity, wait_until
from devtools.chaos.scenario import GatewayScenario, Rig, Row
from edge_agent.cli.acl import CENTRE
from edge_agent.policy.bundle_sign import build_bundle, sign_bundle
from edge_agent.policy.keys import generate_private_key, key_id, public_key_to_pem
from edge_agent.transports.mqtt_client import NO_DELAY, QUIET_LOG

TRUST_KEY = "centre.pub"


def active_version(db: Path) -> int | None:
    """The version in the store's ``policy_active`` (None: only the config's policy, version 0)."""
    con = sqlite3.connect(str(db), timeout=10)
    try:
        row = con.execute("SELECT version FROM policy_active WHERE kind = 'policy'").fetchone()
    except sqlite3.OperationalError:
        return None  # schema not created yet
    finally:
        con.close()
    return None if row is None else int(row[0])


class Centre:
    """The city centre's policy desk: publishes signed bundles, collects the gateway's acks."""

    def __init__(self, port: int, password: str) -> None:
        self.port = port
        self.password = password
        self.key = generate_private_key()
        self.published = 0  # highest version published (acked by the north broker)
        self.acks: list[tuple[float, str, int | None, str | None]] = []  # (t, status, version, reason)
        self.new_ack = asyncio.Event()
        self._stack = contextlib.AsyncExitStack()
        self.client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def acked(self) -> int:
        """The highest version the gateway acknowledged as active (accepted or already active)."""
        return max((v for _, s, v, _ in self.acks if s != "rejected" and v is not None), default=0)

    async def __aenter__(self) -> Centre:
        self.client = await self._stack.enter_async_context(
            aiomqtt.Client(
                "127.0.0.1",
                self.port,
                identifier=f"chaos-centre-policy-{uuid.uuid4().hex[:8]}",
                username=CENTRE,
                password=self.password,
                socket_options=NO_DELAY,
                logger=QUIET_LOG,
            )
        )
        await self.client.subscribe(f"{TOPIC_ROOT}/policy/ack", qos=1)
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
                raw = message.payload if isinstance(message.payload, bytes) else b""
                with contextlib.suppress(msgspec.DecodeError):
                    body = msgspec.json.decode(raw)
                    if isinstance(body, dict):
                        version = body.get("version")
                        self.acks.append(
                            (
                                time.monotonic(),
                                str(body.get("status")),
                                version if isinstance(version, int) else None,
                                body.get("reason"),
                            )
                        )
                        self.new_ack.set()

    def bundle(self, version: int) -> bytes:
        """The chaos policy, its lamps' level shifted by the version (a different policy each time)."""
        payload = POLICY.replace("level = 80\n", f"level = {80 - version % 40}\n").encode()
        now = int(time.time())
        bundle = build_bundle(
            payload,
            kind="policy",
            district="naxi",
            gateways=[GW],
            version=version,
            issued_at=now,
            not_before=now - 60,
            expires=now + 86400,
            key_id=key_id(self.key.public_key()),
            force=True,
        )
        return sign_bundle(bundle, self.key)

    async def publish(self, version: int) -> None:
        assert self.client is not None
        topic = f"{TOPIC_ROOT}/policy"
        await self.client.publish(topic, self.bundle(version), qos=1, retain=True, timeout=20)
        self.published = version


@dataclass
class PolicyCuts(GatewayScenario):
    """Policy bundles v1.. published one after the other while the agent is crashed ``cuts`` times."""

    cuts: int
    rate: float = 10.0  # SOS per second alongside
    seed: int = 1
    crash: Crash = field(default_factory=KillNine)
    checked: int = 0
    after_ack: int = 0
    ahead: int = 0  # crashes that left a newer, not yet acknowledged version active
    centre: Centre | None = None
    drain_timeout: float = 90.0
    name = "policy-cuts"
    settings = ("gateway file: trust.keys = a key made for the run; bundles v1.. forced (no validation record)",)

    def title(self) -> str:
        return f"{self.crash.what} during policy installs (signed bundles, acked)"

    def tune(self, doc: dict[str, Any]) -> None:
        doc["trust"] = {"keys": [TRUST_KEY]}

    def before_start(self, shipped: Layout) -> None:
        self.centre = Centre(shipped.north.port, shipped.north_passwords[CENTRE])
        (shipped.work / TRUST_KEY).write_bytes(public_key_to_pem(self.centre.key.public_key()))

    async def drive(self, rig: Rig) -> None:
        centre = self.centre
        assert centre is not None
        async with centre:
            stop = asyncio.Event()
            publisher = asyncio.create_task(self._publish(centre, stop))
            try:
                await super().drive(rig)
            finally:
                stop.set()
                await publisher
            done = await wait_until(lambda: centre.acked >= centre.published, self.drain_timeout)
            if not done:
                rig.row.failures.append(f"v{centre.published} not acknowledged within {self.drain_timeout:.0f}s")

    async def _publish(self, centre: Centre, stop: asyncio.Event) -> None:
        """v1, v2, ...: the next once the gateway acknowledged the last (retained: a gateway that
        was down gets it when it reconnects)."""
        version = 0
        while not stop.is_set():
            if centre.acked >= version:
                version += 1
                with contextlib.suppress(aiomqtt.MqttError):
                    await centre.publish(version)
            await asyncio.sleep(0.02)

    async def inject(self, rig: Rig) -> None:
        rng = random.Random(self.seed)
        agent, row, centre = rig.agent, rig.row, self.centre
        assert centre is not None
        for _ in range(self.cuts):
            if rng.random() < 0.5:
                await asyncio.sleep(rng.uniform(0.2, 1.2))
            else:
                centre.new_ack.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(centre.new_ack.wait(), 5.0)
                    self.after_ack += 1
                await asyncio.sleep(rng.uniform(0.0, 0.03))
            if agent.crashed() is not None:
                row.failures.append(f"agent exited by itself with {agent.crashed()}")
            self.crash.strike(agent)
            row.injections += 1
            # every ack seen so far was published before the crash (the agent is down now)
            acked, published = centre.acked, centre.published
            self._check_store(agent.db, row, acked, published)
            agent.start()

    def _check_store(self, db: Path, row: Row, acked: int, published: int) -> None:
        if not db.exists():
            return
        result = integrity(db)
        self.checked += 1
        if result != "ok":
            row.failures.append(f"integrity_check after {self.crash.what} {row.injections}: {result}")
        active = active_version(db) or 0
        if active < acked:
            row.failures.append(f"after {self.crash.what} {row.injections}: v{acked} acknowledged, v{active} active")
        elif active > published:
            row.failures.append(f"after {self.crash.what} {row.injections}: v{active} active, v{published} published")
        elif active > acked:
            self.ahead += 1

    def check(self, rig: Rig) -> None:
        centre = self.centre
        assert centre is not None
        refused = [(v, r) for _, s, v, r in centre.acks if s == "rejected"]
        if refused:
            rig.row.failures.append(f"{len(refused)} bundles refused: {refused[:3]}")
        rig.row.notes.append(
            f"v1..v{centre.published} published, {len(centre.acks)} acks;"
            f" {self.after_ack} {self.crash.noun} 0-30 ms after an ack, {self.ahead} left a newer unacked version"
        )

    def notes(self, rig: Rig) -> list[str]:
        centre = self.centre
        assert centre is not None
        active = active_version(rig.agent.db) or 0
        if active != centre.published or centre.acked != centre.published:
            rig.row.failures.append(f"at the end v{active} active, v{centre.acked} acked, v{centre.published} last")
        return [
            f"active = last acknowledged after each of {self.checked} {self.crash.noun}; integrity ok each time",
            *crash_notes(self.crash),
        ]


async def policy_cuts(cuts: int, *, seed: int = 1, base: Path | None = None, crash: Crash | None = None) -> Row:
    """The agent crashed ``cuts`` times during a stream of policy installs: the active policy is
    never older than the last acknowledged one; the last published ends active and acked."""
    return await PolicyCuts(cuts, seed=seed, crash=crash or KillNine()).run(base)
