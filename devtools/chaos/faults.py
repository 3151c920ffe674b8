"""The faults of the chaos suite, each only what is specific to it (the skeleton is
``devtools.chaos.scenario.GatewayScenario``).

  a. ``AgentKills``: kill -9 of the agent at random moments during an SOS stream, restarted
     at once; ``PRAGMA integrity_check`` after every kill and at the end.
  b. ``BrokerRestarts``: the north broker killed (-9) and restarted while alerts flow,
     without and with broker persistence.
  c. ``UplinkOutage``: the uplink down for an hour of accelerated time at 10 msg/s of timeline
     traffic (lamp telemetry and SOS): no per-device gaps, alerts before the telemetry
     backlog, time to the first alert after reconnection.
  d. ``PublishDrops``: a proxy that drops the connection right after a QoS 1 PUBLISH (before
     the PUBACK).
  (e. the serial port vanishing mid-frame is ``devtools.chaos.serial``: no brokers there.)
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from devtools.chaos.clients import Platform, stream
from devtools.chaos.crash import Crash, KillNine, crash_notes
from devtools.chaos.harness import LAMPS, WEARABLES, Key, db_query, integrity, wait_for, wait_until
from devtools.chaos.scenario import GatewayScenario, Rig, Row
from devtools.mosquitto import SAVE_EVERY_CHANGE


# ----- a. kill -9 of the agent ---------------------------------------------------------------------
@dataclass
class AgentKills(GatewayScenario):
    """SOS events at ``rate``/s from 4 wearables while the agent is killed ``kills`` times."""

    kills: int
    rate: float = 40.0
    seed: int = 1
    checked: int = 0
    crash: Crash = field(default_factory=KillNine)
    name = "kills"

    def title(self) -> str:
        return f"{self.crash.what} during SOS stream"

    async def inject(self, rig: Rig) -> None:
        rng = random.Random(self.seed)
        agent, row = rig.agent, rig.row
        for _ in range(self.kills):
            await asyncio.sleep(rng.uniform(0.05, 1.2))
            if agent.crashed() is not None:
                row.failures.append(f"agent exited by itself with {agent.crashed()}")
            self.crash.strike(agent)
            row.injections += 1
            if agent.db.exists():
                result = integrity(agent.db)
                self.checked += 1
                if result != "ok":
                    row.failures.append(f"integrity_check after {self.crash.what} {row.injections}: {result}")
            agent.start()

    def notes(self, rig: Rig) -> list[str]:
        return [f"integrity ok after each of {self.checked} {self.crash.noun} and at the end", *crash_notes(self.crash)]


# ----- b. north broker killed and restarted ----------------------------------------------------------
@dataclass
class BrokerRestarts(GatewayScenario):
    """kill -9 of the north (city) broker while SOS alerts flow, then a restart.

    Without persistence the restarted broker has forgotten every subscription, and MQTT drops
    what is published to a topic nobody subscribes to: the outbox cannot help with that. So the
    gateway reaches north through a proxy that holds it off until the platform has subscribed
    again. With persistence (saved after every change) the platform's session and its queued
    messages survive the kill: the platform is kept away for a second after each restart while
    the gateway drains its outbox into the broker.
    """

    restarts: int
    persistence: bool
    rate: float = 40.0
    seed: int = 2
    first_alerts: list[float] = field(default_factory=list)
    via_proxy = True

    def __post_init__(self) -> None:
        self.name = "broker-p" if self.persistence else "broker-np"
        self.north_persistence = self.persistence
        self.north_extra = SAVE_EVERY_CHANGE if self.persistence else ""
        if self.persistence:
            self.settings = (
                "north: autosave_on_changes + autosave_interval 1 (shipped: persistence, default 30 min autosave)",
                "platform held away from each kill to 1 s after the restart",
                "proxy in front of north (passes everything)",
            )
        else:
            self.settings = (
                "north: persistence false (shipped: true)",
                "gateway cut off before each kill until the platform has all the broker took, and"
                " held off until the platform has resubscribed",
            )

    def title(self) -> str:
        return "north broker kill -9 + restart, " + ("persistence" if self.persistence else "no persistence")

    async def inject(self, rig: Rig) -> None:
        rng = random.Random(self.seed)
        platform, proxy = rig.platform, rig.proxy
        for _ in range(self.restarts):
            await asyncio.sleep(rng.uniform(0.5, 1.5))
            if not self.persistence:
                # a broker without persistence loses, at kill -9, what it acknowledged and had not
                # yet passed on: no gateway can help that. Cut the gateway off first and let the
                # broker hand the platform what it holds, then kill it (the SOS keep coming south).
                proxy.cut()
                await wait_until(_quiet(platform), 5.0)
            rig.north.kill()
            if self.persistence:
                platform.hold = True  # away from the kill until 1 s after the restart
            rig.row.injections += 1
            await asyncio.sleep(rng.uniform(0.2, 1.0))
            rig.north.start()
            back = time.monotonic()
            if self.persistence:
                await asyncio.sleep(1.0)  # the gateway drains into the broker
                platform.hold = False
            else:
                await wait_for(platform.subscribed.wait, 15, "platform back")
                proxy.restore()
            mark = len(platform.arrivals)
            if await wait_until(functools.partial(platform.alert_since, mark), 30):
                found = next(a.t for a in platform.arrivals[mark:] if a.kind == "alert")
                self.first_alerts.append(found - back)

    def check(self, rig: Rig) -> None:
        # with persistence the platform is held away for 1 s: no reconnect figure
        rig.row.first_alert_s = max(self.first_alerts) if self.first_alerts and not self.persistence else None

    def notes(self, rig: Rig) -> list[str]:
        if self.persistence:
            return ["platform away from each kill to 1 s after the restart"]
        return ["platform resubscribes before the gateway is let back in"]


def _quiet(platform: Platform, for_s: float = 0.3) -> Callable[[], bool]:
    """A predicate: nothing new arrived at the platform for ``for_s`` seconds."""
    seen = [len(platform.arrivals), time.monotonic()]

    def quiet() -> bool:
        if len(platform.arrivals) != seen[0]:
            seen[:] = [len(platform.arrivals), time.monotonic()]
        return time.monotonic() - seen[1] >= for_s

    return quiet


# ----- c. the uplink down for an hour of accelerated time -----------------------------------------
@dataclass
class UplinkOutage(GatewayScenario):
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

    outage_timeline_s: float = 3600.0
    speed: float = 60.0
    timeline_rate: float = 10.0
    sos_every: int = 25
    lamps: int = len(LAMPS)  # the first N of the example's lamps
    around_s: float = 2.0
    sent_before: set[Key] = field(default_factory=set)
    outage_real: float = 0.0
    expected: set[Key] | None = None
    name = "outage"
    via_proxy = True
    settings = ("proxy in front of north, cut for the outage",)
    inflight = 64
    drain_timeout = 120.0

    def title(self) -> str:
        minutes = self.outage_timeline_s / 60
        return f"uplink down {minutes:g} min timeline (x{self.speed:g}) at {self.timeline_rate:g} msg/s"

    async def drive(self, rig: Rig) -> None:
        hub, platform, proxy, row = rig.hub, rig.platform, rig.proxy, rig.row
        counter = [0]

        def numbered(i: int) -> Key:
            counter[0] += 1
            n = counter[0]
            if n % self.sos_every == self.sos_every - 1:
                return hub.next_sos(WEARABLES[(n // self.sos_every) % len(WEARABLES)])
            return ("tel", n, LAMPS[n % min(self.lamps, len(LAMPS))])

        async def phase(seconds: float) -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(stream(self.timeline_rate * self.speed, stop, numbered, hub))
            await asyncio.sleep(seconds)
            stop.set()
            await task

        await phase(self.around_s)
        await wait_until(lambda: platform.has_all(_norm(hub.accepted)), 30)
        proxy.cut()
        cut_at = time.monotonic()
        row.injections = 1
        await phase(self.outage_timeline_s / self.speed)
        # everything acknowledged by south before now must be queued before reconnection
        self.sent_before = _norm(hub.accepted)
        undelivered = {k for k in self.sent_before if k not in platform.first}
        queued = await wait_until(
            lambda: db_query(rig.agent.db, "SELECT COUNT(*) FROM outbox WHERE link = 'north'") >= len(undelivered),
            120,
        )
        if not queued:
            row.failures.append("the agent did not queue the outage traffic within 120 s")
        back = time.monotonic()
        self.outage_real = back - cut_at
        proxy.restore()
        await phase(self.around_s)
        rig.drain_from = back

    def keys(self, rig: Rig) -> set[Key]:
        if self.expected is None:  # fixed when the traffic has stopped
            self.expected = _norm(rig.hub.accepted)
        return self.expected

    def check(self, rig: Rig) -> None:
        platform, row, back = rig.platform, rig.row, rig.drain_from or 0.0
        after = [a for a in platform.arrivals if a.t >= back and a.kind == "alert"]
        row.first_alert_s = after[0].t - back if after else None
        gaps = platform.receiver.gaps()
        if gaps:
            row.failures.append(f"seq gaps: { {k[1]: v[:5] for k, v in gaps.items()} }")
        backlog = [
            k for k in self.sent_before if k in platform.first and platform.arrivals[platform.first[k]].t >= back
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
        row.notes.append(f"outage {self.outage_real:.1f}s real = {self.outage_real * self.speed / 60:.0f} min timeline")
        if row.first_alert_s is not None and row.first_alert_s > 5.0:
            row.notes.append("first alert slower than the 5 s target")


def _norm(accepted: dict[Key, float]) -> set[Key]:
    """Telemetry keys carry the lamp for publishing; the platform knows them by marker only."""
    return {k if k[0] == "sos" else ("tel", k[1]) for k in accepted}


# ----- d. connection dropped right after a QoS 1 PUBLISH -------------------------------------------
@dataclass
class PublishDrops(GatewayScenario):
    """A proxy drops the gateway's north connection after each of ``drops`` alert PUBLISHes."""

    drops: int
    rate: float = 20.0
    name = "drops"
    via_proxy = True
    settings = ("proxy in front of north drops the link after alert PUBLISHes",)

    def title(self) -> str:
        return "proxy drops link after PUBLISH, before PUBACK"

    def before_stream(self, rig: Rig) -> None:
        rig.proxy.drop_after_publishes(self.drops, "/alert")

    async def inject(self, rig: Rig) -> None:
        proxy = rig.proxy
        await wait_until(lambda: proxy.drops_pending == 0, 30 + self.drops * 2.0)
        await asyncio.sleep(0.5)

    def check(self, rig: Rig) -> None:
        if rig.row.injections < self.drops:
            rig.row.failures.append(f"only {rig.row.injections} of {self.drops} drops injected")

    async def drive(self, rig: Rig) -> None:
        await super().drive(rig)
        rig.row.injections = rig.proxy.drops


# ----- the scenarios as functions (what `just chaos` and the tests call) ----------------------------
async def agent_kills(
    kills: int, *, rate: float = 40.0, seed: int = 1, base: Path | None = None, crash: Crash | None = None
) -> Row:
    return await AgentKills(kills, rate=rate, seed=seed, crash=crash or KillNine()).run(base)


async def broker_restarts(
    restarts: int, *, persistence: bool, rate: float = 40.0, seed: int = 2, base: Path | None = None
) -> Row:
    return await BrokerRestarts(restarts, persistence, rate=rate, seed=seed).run(base)


async def uplink_outage(
    outage_timeline_s: float = 3600.0,
    *,
    speed: float = 60.0,
    timeline_rate: float = 10.0,
    sos_every: int = 25,
    lamps: int = len(LAMPS),
    around_s: float = 2.0,
    base: Path | None = None,
) -> Row:
    scenario = UplinkOutage(outage_timeline_s, speed, timeline_rate, sos_every, lamps, around_s)
    return await scenario.run(base)


async def publish_drops(drops: int, *, rate: float = 20.0, base: Path | None = None) -> Row:
    return await PublishDrops(drops, rate=rate).run(base)
