"""j. kill -9 of the agent during the SMS hand-off to Gammu's SMS daemon.

Owns: one scenario on the ``GatewayScenario`` skeleton (shipped layout): SOS from the MQTT
wearables at ``rate``; the rule notifies the village doctor (``dr-wang``, the example's
``village_doctor``, phone +8613800000101) by SMS only (devtools/chaos/policy-sms.toml); the
gateway file's ``[modem]`` points at a real gammu-smsd on its ``dummy`` phone
(devtools/gammu.py). The doctor answers each SMS from the phone ("1 <code>", then "2 <code>":
taken, done), which frees them for the next alert (a notified doctor holds the alert; the
others wait in the chain's queue). Meanwhile the agent is killed -9 ``kills`` times and
restarted at once, each kill at a seeded choice of moment: the moment an SMS row is committed
in the agent's outbox (before or while it is handed to ``gammu-smsd-inject``), the moment a new
file appears in the daemon's outbox (right after the hand-off, before the agent deletes its
row), or at random.

Pass: per alert, the SMS the daemon actually sent to the doctor (its log, one "Transmitted" line
per send with the text it found in the outbox: an independent record, the daemon's ``sent/``
folder loses copies when it reuses a file name) number at least 1 (never lost) and at most 2
(at most twice: a kill between the daemon's outbox file and the agent's commit). Figures: sent
= SOS the south broker accepted, delivered = SOS whose SMS went out, duplicates = second SMS.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devtools.chaos.harness import db_query, integrity, wait_until, workdir
from devtools.chaos.scenario import GatewayScenario, Rig, Row
from devtools.gammu import DummyModem

DOCTOR = "+8613800000101"  # dr-wang in examples/village-gateway.toml
SMS_POLICY = Path(__file__).with_name("policy-sms.toml")
SOS_IN_SMS = re.compile(r"SOS (\d+) from (\S+?)[.,\s]")
CODE_IN_SMS = re.compile(r"Reply 1 ([0-9A-Z]{4}) ")  # the default [messages] sms template


@dataclass
class SmsKills(GatewayScenario):
    """SOS at ``rate``/s, each an SMS to the doctor through gammu-smsd, while the agent is killed."""

    kills: int
    rate: float = 0.5
    seed: int = 1
    checked: int = 0
    moments: Counter[str] = field(default_factory=Counter)
    modem: DummyModem | None = None
    settle_s: float | None = None
    drain_timeout: float = 180.0
    name = "sms-kills"
    settings = (
        "policy: devtools/chaos/policy-sms.toml (the SOS alert goes to dr-wang by SMS only)",
        "modem: gammu-smsd on its dummy phone (devtools/gammu.py smsdrc) instead of the SIM's modem",
        "SMS pacing off (every = 0s, per_minute = 600): one doctor gets an SOS every 2 s",
    )

    def title(self) -> str:
        return "agent kill -9 during the SMS hand-off to gammu-smsd"

    def tune(self, doc: dict[str, Any]) -> None:
        doc["gateway"]["policy"] = str(SMS_POLICY)
        doc.setdefault("modem", {})
        assert self.modem is not None
        doc["modem"]["smsdrc"] = str(self.modem.smsdrc)  # the dummy phone's daemon, started first
        doc["modem"]["poll"] = 0.2
        doc["modem"] |= {"every": "0s", "per_minute": 600}  # one doctor gets an SOS every 2 s here

    async def run(self, base: Path | None = None) -> Row:
        with workdir(base, f"{self.name}-modem") as tmp, DummyModem(Path(tmp)) as modem:
            self.modem = modem
            return await super().run(base)

    async def inject(self, rig: Rig) -> None:
        rng = random.Random(self.seed)
        agent, row = rig.agent, rig.row
        assert self.modem is not None
        outbox = self.modem.root / "outbox"
        await asyncio.sleep(1.0)
        for _ in range(self.kills):
            moment = rng.choice(("row_committed", "outbox_file", "random"))
            if moment == "row_committed":
                if not await _poll(lambda: _sms_rows(agent.db) > 0, 8.0):
                    moment = "random (no row)"
            elif moment == "outbox_file":
                before = set(outbox.iterdir())
                if not await _poll(lambda before=before: bool(set(outbox.iterdir()) - before), 8.0):
                    moment = "random (no file)"
            else:
                await asyncio.sleep(rng.uniform(0.1, 1.5))
            if agent.crashed() is not None:
                row.failures.append(f"agent exited by itself with {agent.crashed()}")
            agent.kill()
            self.moments[moment] += 1
            row.injections += 1
            if agent.db.exists():
                self.checked += 1
                result = integrity(agent.db)
                if result != "ok":
                    row.failures.append(f"integrity_check after kill {row.injections}: {result}")
            agent.start()
            await asyncio.sleep(rng.uniform(0.3, 0.8))  # the agent starts and hands over what waits

    def _per_alert(self) -> Counter[tuple[str, int]]:
        assert self.modem is not None
        sent: Counter[tuple[str, int]] = Counter()
        for number, text in self.modem.transmitted():
            if number == DOCTOR:
                for seq, device in SOS_IN_SMS.findall(text):
                    sent[(device, int(seq))] += 1
        return sent

    def check(self, rig: Rig) -> None:
        """Count the SMS per alert (``drive`` waited for them); the SOS figures of the tally
        go to the notes."""
        assert self.modem is not None
        row = rig.row
        # the skeleton counts an SOS under two msg_ids as a double alert; here every alert has
        # three messages north (raised, acknowledged, resolved by the doctor's replies)
        row.failures[:] = [f for f in row.failures if not f.endswith("SOS alerted under two msg_ids")]
        wanted = {(k[1], int(k[2])) for k in rig.hub.accepted if k[0] == "sos"}
        outbox = self.modem.root / "outbox"
        row.notes.append(f"{row.sent} SOS accepted by south, {row.delivered} alerted north")
        counts = self._per_alert()
        row.sent = len(wanted)
        row.delivered = sum(1 for k in wanted if counts[k] >= 1)
        row.lost = row.sent - row.delivered
        row.duplicates = sum(max(0, counts[k] - 1) for k in wanted)
        lost = sorted(k for k in wanted if counts[k] == 0)
        if lost:
            row.failures.append(f"{len(lost)} alerts with no SMS: {lost[:3]}")
        thrice = sorted((k, counts[k]) for k in wanted if counts[k] > 2)
        if thrice:
            row.failures.append(f"{len(thrice)} alerts with more than 2 SMS: {thrice[:3]}")
        if any(outbox.iterdir()):
            row.failures.append("the daemon's outbox is not empty at the end")
        by = Counter(min(counts[k], 3) for k in wanted)
        row.notes.append(
            f"SMS per alert: {by[1]} x1, {by[2]} x2, {by[0]} x0; kills: "
            + ", ".join(f"{n} {m}" for m, n in sorted(self.moments.items()))
        )

    async def drive(self, rig: Rig) -> None:
        assert self.modem is not None
        doctor = asyncio.create_task(self._doctor())
        try:
            await super().drive(rig)
            outbox = self.modem.root / "outbox"
            quiet = time.monotonic()

            def settled() -> bool:
                wanted = {(k[1], int(k[2])) for k in rig.hub.accepted if k[0] == "sos"}
                counts = self._per_alert()
                idle = not any(outbox.iterdir()) and _sms_rows(rig.agent.db) == 0
                return idle and all(counts[k] >= 1 for k in wanted)

            if not await wait_until(settled, self.drain_timeout):
                rig.row.failures.append(f"SMS not all sent within {self.drain_timeout:.0f}s of the last kill")
            self.settle_s = time.monotonic() - quiet
        finally:
            doctor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await doctor

    async def _doctor(self) -> None:
        """The doctor's phone: each new alert SMS is taken and done by reply ("1 <code>", then
        "2 <code>"), which frees the doctor for the next alert."""
        assert self.modem is not None
        answered: set[str] = set()
        while True:
            for number, text in self.modem.transmitted():
                code = CODE_IN_SMS.search(text)
                if number != DOCTOR or code is None or code.group(1) in answered:
                    continue
                answered.add(code.group(1))
                self.modem.receive(DOCTOR, f"1 {code.group(1)}")
                await asyncio.sleep(1.2)  # the daemon reads the phone once a second
                self.modem.receive(DOCTOR, f"2 {code.group(1)}")
            await asyncio.sleep(0.2)

    def notes(self, rig: Rig) -> list[str]:
        return [f"integrity ok after each of {self.checked} kills and at the end", f"SMS drained {self.settle_s:.0f}s"]


def _sms_rows(db: Path) -> int:
    """SMS rows committed in the agent's outbox and not yet handed over."""
    return db_query(db, "SELECT count(*) FROM outbox WHERE link = 'modem'")


async def _poll(predicate: Any, timeout: float) -> bool:
    """Like ``wait_until`` but every 2 ms (a file in the outbox is there for under a second)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.002)
    return True


async def sms_kills(kills: int, *, seed: int = 1, base: Path | None = None) -> Row:
    """kill -9 of the agent ``kills`` times during the SMS hand-off: every alert's SMS sent at
    least once and at most twice (counted in gammu-smsd's own log)."""
    return await SmsKills(kills, seed=seed).run(base)
