"""The one scenario skeleton of the chaos suite, and the row each scenario fills.

Owns: ``GatewayScenario.run``: a work dir, the shipped layout (``harness.Layout``: the example
gateway file, the village and city brokers; the gateway reaching north directly or through a
``FlakyProxy``; a row's own departures via ``tune``/``before_start``, listed in ``settings``
and shown in the table), the platform, the hub and the agent process; then the fault's own
``drive`` (by default: an SOS stream from the example's wearables at ``rate`` while ``inject``
runs), the drain wait, the tally into a ``Row`` (sent = acknowledged by the south broker, lost
= never seen by the platform, duplicates dropped by msg_id, no SOS under two msg_ids nor two
alert ids), the fault's own ``check``, a clean stop of the agent and
``PRAGMA integrity_check`` on its database. A fault subclass says only what is specific.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devtools.chaos.clients import Hub, Platform, stream
from devtools.chaos.crash import Crash, KillNine
from devtools.chaos.harness import (
    WEARABLES,
    AgentProcess,
    Key,
    Layout,
    db_query,
    integrity,
    layout,
    wait_until,
    workdir,
)
from devtools.flaky_proxy import FlakyProxy
from devtools.mosquitto import MosquittoProcess
from edge_agent.cli.acl import CENTRE


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
    # what this row runs with that the shipped layout (harness.LAYOUT_NOTES) does not have
    settings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.lost == 0 and not self.failures


@dataclass
class Rig:
    """One scenario's running pieces, handed to the fault's hooks."""

    row: Row
    work: Path
    south: MosquittoProcess
    north: MosquittoProcess
    proxy_or_none: FlakyProxy | None
    agent: AgentProcess
    platform: Platform
    hub: Hub
    drain_from: float | None = None  # drain time counted from here (default: end of traffic)
    layout: Layout | None = None  # the shipped layout's files and brokers

    @property
    def proxy(self) -> FlakyProxy:
        """The proxy between the gateway and the north broker (``via_proxy`` scenarios)."""
        if self.proxy_or_none is None:
            raise RuntimeError("this scenario has no proxy in front of the north broker")
        return self.proxy_or_none


class GatewayScenario:
    """A fault against the gateway process between two real brokers. Subclasses set the knobs
    and override ``title`` and ``inject`` (or ``drive`` for their own traffic); optionally
    ``keys``, ``check`` and ``notes``."""

    name = "scenario"  # work dir name
    rate = 40.0  # SOS per second during the default drive
    via_proxy = False  # the gateway reaches north through a FlakyProxy
    north_persistence = True  # as shipped (deploy/mosquitto/mosquitto.conf)
    north_extra = ""
    # the row's departures from the shipped layout, shown in the table ("settings" column)
    settings: tuple[str, ...] = ()
    inflight = 1  # publishes in flight at the hub (1: south acks come in publishing order)
    speed = 1.0  # the agent's clock speed
    drain_timeout = 60.0
    # how ``strike`` crashes the agent (kill -9, or a power cut with the data dir on the power-cut FS)
    crash: Crash = KillNine()

    def title(self) -> str:
        raise NotImplementedError

    async def inject(self, rig: Rig) -> None:
        """The injection loop, run while the SOS stream flows."""
        raise NotImplementedError

    def tune(self, doc: dict[str, Any]) -> None:
        """Change the gateway file (the example as deployed) for this row; say so in ``settings``."""

    def before_start(self, shipped: Layout) -> None:
        """Change the brokers' files before they start (nothing by default)."""

    def before_stream(self, rig: Rig) -> None:
        """Armed before the stream starts (nothing by default)."""

    async def drive(self, rig: Rig) -> None:
        """Traffic and faults: by default an SOS stream from four wearables during ``inject``."""
        self.before_stream(rig)
        stop = asyncio.Event()
        hub = rig.hub
        publisher = asyncio.create_task(
            stream(self.rate, stop, lambda i: hub.next_sos(WEARABLES[i % len(WEARABLES)]), hub)
        )
        try:
            await self.inject(rig)
        finally:
            stop.set()
            await publisher

    def keys(self, rig: Rig) -> set[Key]:
        """What must arrive: everything the south broker acknowledged."""
        return set(rig.hub.accepted)

    def check(self, rig: Rig) -> None:
        """Checks of this fault, after the tally (before the agent stops)."""

    def notes(self, rig: Rig) -> list[str]:
        """Notes of this fault, after the database checks."""
        return []

    async def run(self, base: Path | None = None) -> Row:
        row = Row(self.title())
        row.settings.extend(self.settings)
        if self.speed != 1.0:
            row.settings.append(f"agent --speed {self.speed:g}")
        with workdir(base, self.name) as tmp:
            work = Path(tmp)
            with layout(work, north_persistence=self.north_persistence, north_extra=self.north_extra) as shipped:
                south, north = shipped.south, shipped.north
                async with FlakyProxy(north.port) if self.via_proxy else contextlib.nullcontext() as proxy:
                    north_port = proxy.port if proxy is not None else north.port
                    config = shipped.write(north_port, self.tune)
                    self.before_start(shipped)
                    shipped.start()
                    agent = AgentProcess(config, speed=self.speed)
                    mounted = self.crash.mounted(agent.db.parent)
                    platform = Platform(north.port, username=CENTRE, password=shipped.north_passwords[CENTRE])
                    hub = Hub(south.ports[1], inflight=self.inflight, users=shipped.passwords, tls=shipped.tls())
                    try:
                        async with platform, hub, in_async(mounted):
                            agent.start()
                            await hub.wait_online()
                            rig = Rig(row, work, south, north, proxy, agent, platform, hub, layout=shipped)
                            await self.drive(rig)
                            await self._drain(rig)
                            await asyncio.sleep(0.3)  # late duplicates
                            tally(row, hub, platform, self.keys(rig))
                            self.check(rig)
                            agent.stop()
                            check_db(row, agent)
                            row.notes.extend(self.notes(rig))
                    finally:
                        agent.close()
        return row

    async def _drain(self, rig: Rig) -> None:
        """Wait for every key; the drain time runs to the last first arrival."""
        quiet = time.monotonic()
        keys = self.keys(rig)
        platform = rig.platform
        await wait_until(lambda: platform.has_all(keys), self.drain_timeout)
        arrivals = [platform.arrivals[platform.first[k]].t for k in keys if k in platform.first]
        since = quiet if rig.drain_from is None else rig.drain_from
        rig.row.drain_s = max(0.0, max(arrivals, default=quiet) - since)


@contextlib.asynccontextmanager
async def in_async(manager: contextlib.AbstractContextManager[None]) -> AsyncIterator[None]:
    with manager:
        yield


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
    twice = platform.raised_twice()
    if twice:
        row.failures.append(f"{twice} SOS raised under two alert ids")
    if hub.failed:
        row.notes.append(f"{hub.failed} publishes not acked by south (not counted as sent)")


def check_db(row: Row, agent: AgentProcess) -> None:
    result = integrity(agent.db)
    if result != "ok":
        row.failures.append(f"integrity_check: {result}")
    evicted = db_query(agent.db, "SELECT value FROM counters WHERE name = 'outbox.evicted'")
    if evicted:
        row.notes.append(f"{evicted} telemetry evicted")
