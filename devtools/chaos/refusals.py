"""Refusals: the north broker denies a class the gateway publishes; the store refuses writes.

p. ``DeniedPublish``: the city broker runs the shipped ACL without the grant of one class
   the gateway publishes (``telemetry/lamp/+``: "a broker provisioned from an older ACL").
   SOS and lamp telemetry stream in; every SOS alert must reach the platform, the refused
   telemetry must stay in the outbox (``refused`` = ``not_authorized``, never deleted as
   delivered) and the gateway must sound its local ``north_refused`` alarm on the village
   broker. Then the ACL is fixed (the broker restarted with the full shipped ACL): the parked
   telemetry is retried after ``Outbound.REFUSED_RETRY_DEFAULT_S`` (300 s of the agent's
   clock: 5 s real at ``--speed 60``) and must then be delivered.
w. ``LockedStore``: while SOS stream in, another process holds an exclusive lock on the
   agent's database (``BEGIN EXCLUSIVE``) for ``lock_s``, then rolls back. The agent cannot
   commit: it must not acknowledge (its south link reconnects so the broker redelivers),
   it sounds the ``storage`` alarm, and after the release every SOS the hub got a PUBACK for
   raises exactly one alert; integrity ok.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from devtools.chaos.clients import stream
from devtools.chaos.faults import _norm
from devtools.chaos.harness import CITY_ACL, LAMPS, WEARABLES, Key, Layout, db_query, wait_until
from devtools.chaos.scenario import GatewayScenario, Rig, Row

REFUSED = "SELECT COUNT(*) FROM outbox WHERE refused IS NOT NULL"
DENIED_GRANT = "pattern write district/v1/%u/telemetry/lamp/+\n"


# ----- p. a publish the north broker denies --------------------------------------------------------
@dataclass
class DeniedPublish(GatewayScenario):
    """SOS and lamp telemetry against a city broker whose ACL lacks the telemetry grant."""

    stream_s: float = 3.0
    rate: float = 20.0  # messages per second, every other one an SOS
    speed: float = 60.0  # 300 s refused-retry of the agent's clock = 5 s real
    refused_seen: int = 0
    fixed_at: float = 0.0
    expected: set[Key] | None = None
    name = "denied"
    drain_timeout = 60.0
    settings = ("north ACL: shipped minus `telemetry/lamp/+` grant until the fix (broker restart, full ACL)",)

    def title(self) -> str:
        return "north ACL denies lamp telemetry, then fixed"

    def before_start(self, shipped: Layout) -> None:
        full = CITY_ACL.read_text()
        if DENIED_GRANT not in full:
            raise AssertionError(f"deploy/mosquitto/acl no longer contains {DENIED_GRANT!r}")
        shipped.set_north_acl(full.replace(DENIED_GRANT, ""))

    async def drive(self, rig: Rig) -> None:
        hub, platform, row, agent = rig.hub, rig.platform, rig.row, rig.agent
        assert rig.layout is not None

        def mixed(i: int) -> Key:
            if i % 2 == 0:
                return hub.next_sos(WEARABLES[(i // 2) % len(WEARABLES)])
            return ("tel", i, LAMPS[i % len(LAMPS)])

        stop = asyncio.Event()
        task = asyncio.create_task(stream(self.rate, stop, mixed, hub))
        await asyncio.sleep(self.stream_s)
        stop.set()
        await task
        accepted = _norm(hub.accepted)
        sos = {k for k in accepted if k[0] == "sos"}
        tel = {k for k in accepted if k[0] == "tel"}
        if not await wait_until(lambda: platform.has_all(sos), 30):
            row.failures.append("not every SOS alert reached the platform while telemetry was denied")
        if not await wait_until(lambda: db_query(agent.db, REFUSED) >= len(tel), 30):
            kept = db_query(agent.db, REFUSED)
            row.failures.append(f"only {kept} of {len(tel)} refused telemetry kept in the outbox")
        self.refused_seen = db_query(agent.db, REFUSED)
        reasons = db_query(agent.db, "SELECT COUNT(*) FROM outbox WHERE refused = 'not_authorized'")
        if reasons != self.refused_seen:
            row.failures.append(f"{self.refused_seen - reasons} refused rows with a reason other than not_authorized")
        leaked = sum(1 for k in tel if k in platform.first)
        if leaked:
            row.failures.append(f"{leaked} denied telemetry reached the platform anyway")
        if not await wait_until(lambda: "north_refused" in hub.alarm_reasons(), 15):
            row.failures.append(f"no north_refused alarm on the village broker (saw {sorted(hub.alarm_reasons())})")
        # the operator fixes the ACL: the broker restarted with the full shipped file
        rig.layout.set_north_acl(CITY_ACL.read_text())
        rig.north.restart(timeout=15)
        row.injections = 1
        self.fixed_at = time.monotonic()
        rig.drain_from = self.fixed_at

    def keys(self, rig: Rig) -> set[Key]:
        if self.expected is None:
            self.expected = _norm(rig.hub.accepted)
        return self.expected

    def check(self, rig: Rig) -> None:
        left = db_query(rig.agent.db, REFUSED)
        if left:
            rig.row.failures.append(f"{left} refused rows still in the outbox after the fix")

    def notes(self, rig: Rig) -> list[str]:
        tel = sum(1 for k in self.keys(rig) if k[0] == "tel")
        return [
            f"{self.refused_seen} of {tel} telemetry parked as not_authorized, north_refused alarm, "
            "then delivered after the ACL fix (drain time from the fix)"
        ]


# ----- w. a store that refuses writes ---------------------------------------------------------------
LOCKER = """
import sqlite3, sys, time
con = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
con.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
con.execute("ROLLBACK")
con.close()
print("released", flush=True)
"""
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d[,.]\d+)")


@dataclass
class LockedStore(GatewayScenario):
    """An SOS stream while another process holds ``BEGIN EXCLUSIVE`` on the agent's database."""

    lock_s: float = 60.0
    rate: float = 20.0
    before_s: float = 1.0
    after_s: float = 2.0
    locked_at: float = 0.0
    released_at: float = 0.0
    alarm_after: float | None = None
    locked_wall: float = 0.0
    quiet: list[float] = field(default_factory=list)
    exits: list[tuple[float, int]] = field(default_factory=list)  # (s after the lock, exit code)
    supervisor: asyncio.Task[None] | None = None
    name = "locked"
    drain_timeout = 120.0
    settings = ("agent restarted 2 s after it exits, as deploy/systemd/edge-agent.service (Restart=always)",)

    def title(self) -> str:
        return f"store write-locked {self.lock_s:g} s during SOS stream"

    async def supervise(self, rig: Rig) -> None:
        """systemd's part (Restart=always, RestartSec=2): an agent that exits is started again."""
        agent = rig.agent
        while True:
            await asyncio.sleep(0.05)
            code = agent.crashed()
            if code is None:
                continue
            self.exits.append((time.monotonic() - self.locked_at, code))
            agent.proc = None
            await asyncio.sleep(2.0)
            agent.start()

    async def inject(self, rig: Rig) -> None:
        self.supervisor = asyncio.create_task(self.supervise(rig))
        await asyncio.sleep(self.before_s)
        locker = await asyncio.create_subprocess_exec(
            sys.executable, "-c", LOCKER, str(rig.agent.db), str(self.lock_s), stdout=subprocess.PIPE
        )
        assert locker.stdout is not None
        line = await asyncio.wait_for(locker.stdout.readline(), 30)
        if line.strip() != b"locked":
            rig.row.failures.append(f"the locker could not lock the database: {line!r}")
        self.locked_at = time.monotonic()
        self.locked_wall = time.time()
        rig.row.injections = 1
        await asyncio.wait_for(locker.wait(), self.lock_s + 30)
        self.released_at = time.monotonic()
        rig.drain_from = self.released_at
        await asyncio.sleep(self.after_s)

    def check(self, rig: Rig) -> None:
        row, hub, platform = rig.row, rig.hub, rig.platform
        if self.supervisor is not None:
            self.supervisor.cancel()
        if self.exits:
            row.notes.append(
                f"agent exited {len(self.exits)} times (at "
                + ", ".join(f"+{t:.1f}s code {c}" for t, c in self.exits[:5])
                + "; a timer's transaction: database is locked) and was restarted"
            )
        storage = [a["_t"] for a in hub.alarms if a.get("reason") == "storage"]
        if not storage:
            row.failures.append(f"no storage alarm on the village broker (saw {sorted(hub.alarm_reasons())})")
        else:
            self.alarm_after = min(storage) - self.locked_at
        during = [platform.arrivals[i].t for k, i in platform.first.items() if k[0] == "sos"]
        leaked = [t for t in during if self.locked_at + 0.5 < t < self.released_at]
        if leaked:  # the outbox is read (WAL), but nothing new can be committed while locked
            row.notes.append(f"{len(leaked)} alerts reached the platform during the lock")

    def notes(self, rig: Rig) -> list[str]:
        """What the agent did during the lock, from its log: each line at WARNING or above
        (a failed commit, a failed counters flush, a reconnect for redelivery) as seconds
        after the lock was taken: the gaps show the 5 s busy wait on the event loop."""
        held = self.released_at - self.locked_at
        events: list[str] = []
        for line in (rig.work / "agent.log").read_text(errors="replace").splitlines():
            m = LOG_TIME.match(line)
            if not m or not any(level in line for level in (" WARNING ", " ERROR ", " CRITICAL ")):
                continue
            at = _parse(m.group(1)) - self.locked_wall
            if -1.0 < at < held + 10.0:
                what = (
                    "storage alarm"
                    if "ALARM storage" in line
                    else "flush failed"
                    if "flush failed" in line
                    else ("reconnect for redelivery" if "not handled" in line else line.split(" ", 3)[-1][:40])
                )
                events.append(f"+{at:.1f}s {what}")
        notes = [f"lock held {held:.1f} s; agent log: " + (", ".join(events[:8]) or "nothing")]
        if len(events) > 8:
            notes[0] += f" (+{len(events) - 8} more)"
        if self.alarm_after is not None:
            notes.append(f"storage alarm reached the village broker {self.alarm_after:.1f} s after the lock")
        return notes


def _parse(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace(",", ".")).timestamp()


# ----- as functions (what `just chaos` and the tests call) -------------------------------------------
async def denied_publish(*, stream_s: float = 3.0, rate: float = 20.0, base: Path | None = None) -> Row:
    return await DeniedPublish(stream_s=stream_s, rate=rate).run(base)


async def locked_store(lock_s: float = 60.0, *, rate: float = 20.0, base: Path | None = None) -> Row:
    return await LockedStore(lock_s=lock_s, rate=rate).run(base)
