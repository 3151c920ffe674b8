"""f. kill -9 of the agent while the real dongle firmware streams SOS frames to it.

Owns: one scenario: the MicroPython dongle firmware (``hardware/firmware/dongle`` under the
unix port) on one end of a pty (``hardware.hil.ptybus.PtyBus``), the agent's ``[dongle] port``
on the other; the firmware lives for the whole run (it boots once: one HELLO, one seq counter)
while the agent is killed -9 and restarted ``kills`` times and reopens the port each time.
Radio packets (``sos <radio_id> <battery>``) are written into the firmware at a steady rate.

Kill moments (seeded): half at a random delay after the start, half *right after an ACK*: the
bus relay thread decodes what the agent writes and sends SIGKILL the moment it sees the ACK of
a data frame (sub-millisecond), or a few ms later. An agent that ACKed before its commit would
lose that frame here (see ``tests/chaos/test_chaos_kills.py`` and the report).

The tap on the line is the ground truth: ``acked`` = data-frame seqs the agent ACKed on the
wire. The store is the outcome: the rule's message is ``SOS {link_seq} from {device}``, so each
alert names the frame (one boot per run). Pass: every ACKed frame has exactly one alert (0 lost,
0 duplicates), the firmware's queue is empty at the end (``stats``: sent == acked == presses +
HELLO), ``PRAGMA integrity_check`` ok after every kill and at the end, and the platform saw
each alert under one msg_id.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import signal
import sqlite3
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devtools.chaos.clients import Platform
from devtools.chaos.crash import Crash, KillNine, crash_notes
from devtools.chaos.harness import AgentProcess, integrity, layout, wait_for, wait_until, workdir
from devtools.chaos.scenario import Row, in_async
from edge_agent.cli.acl import CENTRE

RADIOS = (101, 102, 103, 104)
ALERT_MESSAGE = re.compile(r"^SOS (\d+) from (\S+)$")

DONGLE_POLICY = """
[policy]
name = "chaos-dongle"

[programs.village]
on = "sunset+10m"
off = "sunrise-15m"
level = 80

[assign]
default = "village"

[[rules]]
id = "sos"
when = { trigger = "event", event = "sos", kind = "wearable" }
then = [ { action = "alert", priority = 1, message = "SOS {link_seq} from {device}" } ]
"""


def dongle_tune(work: Path, port: Path) -> Any:
    """The shipped gateway file plus the dongle: ``[dongle] port`` and four wearables on it
    (radio ids 101-104); the row's own rule file (the link seq in the alert message)."""
    (work / "policy-dongle.toml").write_text(DONGLE_POLICY)

    def tune(doc: dict[str, Any]) -> None:
        doc["gateway"]["policy"] = "policy-dongle.toml"
        doc["dongle"] = {"port": str(port)}
        doc["wearables"] = [
            *doc.get("wearables", []),
            *({"id": f"R{r}", "zone": "lane", "link": "dongle", "radio_id": r} for r in RADIOS),
        ]

    return tune


def sos_alerts(db: Path) -> dict[int, int]:
    """link seq -> number of 'sos' alerts in the store naming it."""
    counts: dict[int, int] = {}
    if not db.exists():
        return counts
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        rows = con.execute("SELECT message FROM alerts WHERE rule = 'sos'").fetchall()
    except sqlite3.OperationalError:
        return counts  # schema not created yet
    finally:
        con.close()
    for (message,) in rows:
        match = ALERT_MESSAGE.match(str(message))
        if match:
            seq = int(match.group(1))
            counts[seq] = counts.get(seq, 0) + 1
    return counts


class LineTap:
    """Decodes both directions of the dongle line (called on the PtyBus relay thread) and can
    kill the agent the moment it writes the ACK of a data frame."""

    def __init__(self) -> None:
        from edge_agent.codec import frames

        self.frames = frames
        self._down = frames.Decoder()  # dongle -> agent
        self._up = frames.Decoder()  # agent -> dongle
        self.lock = threading.Lock()
        self.sent: dict[int, int] = {}  # data seq -> device id (first copy seen on the wire)
        self.copies = 0  # retransmissions seen (copies of a seq already on the wire)
        self.acked: set[int] = set()  # data seqs the agent ACKed
        self.hello_acked = False
        self.acks = 0  # ACK frames of data frames written by the agent (copies ACKed again too)
        self._armed = False
        self._victim: subprocess.Popen[bytes] | None = None
        self.fired = threading.Event()

    def arm(self, proc: subprocess.Popen[bytes] | None) -> None:
        """Set ``fired`` at the next ACK of a data frame not ACKed before, and SIGKILL ``proc``
        (if given) right there, on the relay thread."""
        with self.lock:
            self.fired.clear()
            self._armed = True
            self._victim = proc

    def disarm(self) -> None:
        with self.lock:
            self._armed = False
            self._victim = None

    def __call__(self, direction: str, data: bytes) -> None:
        frames = self.frames
        if direction == "to_agent":
            for result in self._down.feed(data):
                if isinstance(result, str) or result.kind in (frames.HELLO, frames.ACK):
                    continue
                with self.lock:
                    if result.seq in self.sent:
                        self.copies += 1
                    else:
                        self.sent[result.seq] = result.device_id
            return
        for result in self._up.feed(data):
            if isinstance(result, str) or result.kind != frames.ACK:
                continue
            if result.device_id == 0 and result.seq == 1:
                self.hello_acked = True
                continue
            with self.lock:
                new = result.seq not in self.acked
                self.acked.add(result.seq)
                self.acks += 1
                proc, armed = self._victim, self._armed and new
                if armed:
                    self._armed, self._victim = False, None
            if armed:
                if proc is not None:
                    with contextlib.suppress(ProcessLookupError, OSError):
                        proc.send_signal(signal.SIGKILL)
                self.fired.set()

    def unacked_on_wire(self) -> list[int]:
        with self.lock:
            return sorted(s for s in self.sent if s not in self.acked)


@dataclass
class DongleKills:
    """SOS presses at ``rate``/s into the dongle firmware while the agent is killed ``kills`` times."""

    kills: int
    seed: int = 1
    rate: float = 4.0  # presses per second
    integrity_every: int = 1  # PRAGMA integrity_check after every n-th kill (and at the end)
    drain_timeout: float = 60.0
    name = "dongle-kills"
    presses: int = 0
    checked: int = 0
    after_ack: int = 0  # kills sent the moment an ACK appeared on the wire
    committed_unacked: int = 0  # kills that caught a frame committed (alert stored) but not ACKed
    no_ack_in_time: int = 0
    stats_line: str = ""
    notes: list[str] = field(default_factory=list)
    crash: Crash = field(default_factory=KillNine)

    def title(self) -> str:
        return f"{self.crash.what} during dongle SOS stream (firmware on a pty)"

    async def run(self, base: Path | None = None) -> Row:
        from hardware.hil.procs import DONGLE_DIR, FirmwareProcess
        from hardware.hil.ptybus import PtyBus

        row = Row(self.title())
        row.settings.append("dongle port on a pty, wearables R101-R104 on it; policy: 'SOS {link_seq} from {device}'")
        with workdir(base, self.name) as tmp:
            work = Path(tmp)
            with layout(work) as shipped:
                bus = PtyBus(work / "ttyDONGLE").start()
                tap = LineTap()
                bus.tap = tap
                radio_r, radio_w = os.pipe()
                firmware = FirmwareProcess(
                    DONGLE_DIR, [f"/dev/fd/{radio_r}", "30"], work / "dongle.log", extra_fds=(radio_r,)
                )
                os.close(radio_r)
                firmware.attach(bus)
                config = shipped.write(shipped.north.port, dongle_tune(work, bus.link_path))
                agent = AgentProcess(config)
                started = time.monotonic()
                try:
                    shipped.start()
                    platform = Platform(shipped.north.port, username=CENTRE, password=shipped.north_passwords[CENTRE])
                    async with platform, in_async(self.crash.mounted(agent.db.parent)):
                        agent.start()
                        stop = asyncio.Event()
                        presser = asyncio.create_task(self._press(radio_w, stop))
                        try:
                            await self._inject(agent, tap, row)
                        finally:
                            stop.set()
                            await presser
                        quiet = time.monotonic()
                        await self._drain(agent, tap, firmware, radio_w, row)
                        row.drain_s = time.monotonic() - quiet
                        await wait_until(lambda: self._platform_has_all(platform, tap), 30)
                        agent.stop()
                        self._tally(row, agent, tap, platform)
                        row.notes.extend(crash_notes(self.crash))
                finally:
                    agent.close()
                    with contextlib.suppress(OSError):
                        os.close(radio_w)
                    bus.close()
                    firmware.stop()
                row.notes.append(f"{time.monotonic() - started:.0f}s in the rig")
        return row

    async def _press(self, radio_w: int, stop: asyncio.Event) -> None:
        """``sos <radio> 80`` lines into the firmware's radio pipe at ``rate`` per second."""
        start = time.monotonic()
        while not stop.is_set():
            delay = start + self.presses / self.rate - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                continue
            radio = RADIOS[self.presses % len(RADIOS)]
            os.write(radio_w, f"sos {radio} 80\n".encode())
            self.presses += 1

    async def _inject(self, agent: AgentProcess, tap: LineTap, row: Row) -> None:
        rng = random.Random(self.seed)
        for n in range(1, self.kills + 1):
            mode = rng.random()
            if mode < 0.5:
                await asyncio.sleep(rng.uniform(0.2, 1.0))
                self.crash.strike(agent)
            else:
                # right after an ACK: at once from the relay thread, or a few ms later
                at_once = mode < 0.8
                tap.arm(agent.proc if at_once else None)
                if await wait_until(tap.fired.is_set, 5.0):
                    self.after_ack += 1
                    if not at_once:
                        await asyncio.sleep(rng.uniform(0.0, 0.02))
                else:
                    self.no_ack_in_time += 1
                tap.disarm()
                self.crash.strike(agent)
            if agent.crashed() is not None:
                row.failures.append(f"agent exited by itself with {agent.crashed()}")
            row.injections += 1
            self._committed_unacked(agent, tap)
            if agent.db.exists() and (n % self.integrity_every == 0):
                result = integrity(agent.db)
                self.checked += 1
                if result != "ok":
                    row.failures.append(f"integrity_check after {self.crash.what} {n}: {result}")
            agent.start()

    def _committed_unacked(self, agent: AgentProcess, tap: LineTap) -> None:
        """Did this kill land between the commit of a frame and its ACK? (the copy the dongle
        sends next must then be recognised by the store's (boot, seq) record)."""
        pending = tap.unacked_on_wire()
        if pending and sos_alerts(agent.db).get(pending[0], 0):
            self.committed_unacked += 1

    async def _drain(self, agent: AgentProcess, tap: LineTap, firmware: object, radio_w: int, row: Row) -> None:
        """Until every press is ACKed: the last data seq is presses + 1 (seq 1 is the HELLO)."""
        last = self.presses + 1
        ok = await wait_until(lambda: last in tap.acked, self.drain_timeout)
        if not ok:
            row.failures.append(f"drain: frame {last} not ACKed within {self.drain_timeout:.0f}s")
        stats = await self._firmware_stats(firmware, radio_w)
        self.stats_line = stats
        words = dict(w.split("=", 1) for w in stats.split()[1:5] if "=" in w)
        sent, acked = int(words.get("sent", -1)), int(words.get("acked", -2))
        if not (sent == acked == self.presses + 1):
            row.failures.append(f"firmware queue not empty: presses={self.presses} {stats}")

    async def _firmware_stats(self, firmware: object, radio_w: int) -> str:
        log = firmware.log  # type: ignore[attr-defined]
        before = log().count("stats ")
        os.write(radio_w, b"stats\n")
        with contextlib.suppress(TimeoutError):
            await wait_for(lambda: log().count("stats ") > before, 10, "firmware stats")
        lines = [x for x in log().splitlines() if x.startswith("stats ")]
        return lines[-1] if lines else ""

    @staticmethod
    def _platform_has_all(platform: Platform, tap: LineTap) -> bool:
        with tap.lock:
            keys = [("sos", f"R{tap.sent[s]}", s) for s in tap.acked if s in tap.sent]
        return all(k in platform.first for k in keys)

    def _tally(self, row: Row, agent: AgentProcess, tap: LineTap, platform: Platform) -> None:
        alerts = sos_alerts(agent.db)
        acked = sorted(tap.acked)
        row.sent = len(acked)
        row.delivered = sum(1 for s in acked if alerts.get(s, 0) >= 1)
        row.lost = row.sent - row.delivered
        row.duplicates = sum(n - 1 for n in alerts.values() if n > 1)
        if row.lost:
            missing = [s for s in acked if not alerts.get(s)]
            row.failures.append(f"lost (ACKed, no alert): seqs {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if row.duplicates:
            twice = [s for s, n in alerts.items() if n > 1]
            row.failures.append(f"{row.duplicates} extra alerts (seqs {twice[:5]})")
        strays = sorted(set(alerts) - set(acked))
        if strays:
            row.failures.append(f"alerts for frames never ACKed: {strays[:5]}")
        if row.sent != self.presses:
            row.failures.append(f"{self.presses} presses, {row.sent} ACKed")
        at_platform = sum(1 for s in acked if s in tap.sent and ("sos", f"R{tap.sent[s]}", s) in platform.first)
        if at_platform != row.sent:
            row.failures.append(f"platform saw {at_platform} of {row.sent} alerts")
        doubles = platform.doubles()
        if doubles:
            row.failures.append(f"{doubles} SOS alerted north under two msg_ids")
        result = integrity(agent.db)
        self.checked += 1
        if result != "ok":
            row.failures.append(f"integrity_check at the end: {result}")
        row.notes.append(
            f"{self.presses} presses, {len(alerts)} alerts, {self.after_ack} {self.crash.noun} right after an ACK,"
            f" {self.committed_unacked} between commit and ACK, {tap.copies} retransmissions;"
            f" integrity ok x{self.checked}"
            if not any("integrity" in f for f in row.failures)
            else ""
        )
        if self.no_ack_in_time:
            row.notes.append(f"{self.no_ack_in_time} ACK waits timed out (killed anyway)")
        row.notes.append(f"firmware {self.stats_line.split(' rejected')[0]}")


async def dongle_kills(kills: int, *, seed: int = 1, base: Path | None = None, crash: Crash | None = None) -> Row:
    """kill -9 of the agent (or a power cut: ``crash``) ``kills`` times while the dongle
    firmware streams SOS frames: every ACKed frame has exactly one alert, the firmware's
    queue empties."""
    return await DongleKills(kills, seed=seed, crash=crash or KillNine()).run(base)
