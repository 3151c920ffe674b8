"""Rollout bookkeeping: which lamps confirmed the active policy version, and which are due
for another copy of their program (the schedule is ``edge_agent.policy.retry``, which the
twin's rollout model uses too) and the counts a centre sees. Pure: no I/O, no asyncio; the
agent sends what ``due`` returns and reports back.

Retries wait while the rollout is making progress: a copy is due once its retry wait has
passed since the broker took the last one *and* no lamp has newly confirmed the version for
``quiet_s`` (reports still coming in mean the path to the lamps is slow, not lossy: a copy
sent now would only queue behind them and cost the lamp a step of back-off). A steady trickle
of confirmations cannot hold a copy back for longer than ``MAX_RETRY_S`` after the last one.
And the wait is never shorter than the lamps' measured turnaround allows (first copy taken ->
confirmation, smoothed as TCP's retransmission timer is, RFC 6298: srtt + 4 x rttvar, at most
``MAX_RETRY_S``). On a quick, quiet path the schedule is exactly ``retry_wait``'s.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import Any

from edge_agent.policy.retry import FIRST_RETRY_S, MAX_RETRY_S, retry_wait


class RolloutTracker:
    def __init__(
        self,
        lamps: Iterable[str],
        version: int,
        first_retry_s: float = FIRST_RETRY_S,
        *,
        clock: Callable[[], float] = time.monotonic,
        quiet_s: float | None = None,
    ) -> None:
        self.version = version
        self.first_retry_s = first_retry_s
        self.quiet_s = first_retry_s / 2 if quiet_s is None else quiet_s
        self.clock = clock  # the timeline of ``due``/``sent`` (the agent: time.monotonic)
        self.reported: dict[str, int | None] = dict.fromkeys(lamps)
        self._sent_at: dict[str, float] = {}  # when the broker took the last copy; inf: in flight
        self._attempts: dict[str, int] = {}
        self.retries = 0
        self.deferred = 0  # copies held back at least once because confirmations were arriving
        self._held: set[str] = set()
        self.last_progress = -math.inf  # when a lamp last newly confirmed the version
        self.turnaround: list[float] = []  # first copy taken -> confirmation, seconds, this version
        self._srtt: float | None = None
        self._rttvar = 0.0

    def install(self, version: int) -> None:
        """A new version is active: every lamp that does not report it is due at once."""
        self.version = version
        self._sent_at.clear()
        self._attempts.clear()
        self._held.clear()
        self.turnaround = []
        self._srtt = None
        self.last_progress = -math.inf

    def report(self, lamp: str, version: int | None) -> None:
        previous = self.reported.get(lamp, 0)
        if lamp not in self.reported:
            return
        self.reported[lamp] = version
        if version != self.version or previous == version or self.version <= 0:
            return
        now = self.clock()
        self.last_progress = now
        sent = self._sent_at.get(lamp, math.inf)
        if self._attempts.get(lamp) == 1 and sent < now:  # Karn: only unambiguous samples
            sample = now - sent
            self.turnaround.append(sample)
            if self._srtt is None:
                self._srtt, self._rttvar = sample, sample / 2
            else:
                self._rttvar = 0.75 * self._rttvar + 0.25 * abs(self._srtt - sample)
                self._srtt = 0.875 * self._srtt + 0.125 * sample

    @property
    def rto(self) -> float:
        """The shortest retry wait the measured turnaround allows (0: no sample yet)."""
        if self._srtt is None:
            return 0.0
        return min(MAX_RETRY_S, self._srtt + 4 * self._rttvar)

    def _due_at(self, lamp: str) -> float:
        """When the lamp's next copy is due (inf: in flight), before the progress rule."""
        attempts = self._attempts.get(lamp, 0)
        wait = max(retry_wait(attempts, self.first_retry_s), self.rto) if attempts else 0.0
        return self._sent_at.get(lamp, -math.inf) + wait

    def _held_back(self, lamp: str, now: float) -> bool:
        """Confirmations are still arriving: hold a retry back (never beyond MAX_RETRY_S)."""
        if not self._attempts.get(lamp) or now - self.last_progress >= self.quiet_s:
            return False
        return now < self._sent_at.get(lamp, -math.inf) + MAX_RETRY_S

    def due(self, now: float, eligible: Iterable[str] | None = None) -> list[str]:
        """Lamps to send a copy now; marks them in flight and counts retries."""
        if self.version <= 0:
            return []
        lamps = self.reported if eligible is None else eligible
        chosen = []
        for lamp in lamps:
            if self.reported.get(lamp) == self.version:
                continue
            due_at = self._due_at(lamp)
            if due_at > now:
                continue
            if self._held_back(lamp, now):
                if lamp not in self._held:
                    self._held.add(lamp)
                    self.deferred += 1
                continue
            attempts = self._attempts.get(lamp, 0)
            self._sent_at[lamp] = math.inf
            self._attempts[lamp] = attempts + 1
            self._held.discard(lamp)
            if attempts:
                self.retries += 1
            chosen.append(lamp)
        return chosen

    def next_due(self, now: float) -> float:
        """The earliest time a lamp may become due (inf: none is waiting); ``due`` decides."""
        if self.version <= 0:
            return math.inf
        earliest = math.inf
        release = self.last_progress + self.quiet_s
        for lamp, version in self.reported.items():
            if version == self.version:
                continue
            due_at = self._due_at(lamp)
            if due_at == math.inf:
                continue
            if due_at <= now and self._held_back(lamp, now):
                due_at = min(release, self._sent_at[lamp] + MAX_RETRY_S)
            earliest = min(earliest, due_at)
        return earliest

    def sent(self, lamp: str, now: float) -> None:
        """The broker (or the bus node) took the copy: the retry clock starts now."""
        self._sent_at[lamp] = now

    def summary(self, gateway: str) -> dict[str, Any]:
        on_version = sum(1 for v in self.reported.values() if v == self.version)
        return {"v": 1, "gateway": gateway, "policy_version": self.version, "lamps": len(self.reported),
                "on_version": on_version, "retries": self.retries}  # fmt: skip
