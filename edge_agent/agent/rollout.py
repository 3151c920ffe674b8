"""Rollout bookkeeping: which lamps confirmed the active policy version, and which are due
for another copy of their program (the schedule is ``edge_agent.policy.retry``, which the
twin's rollout model uses too) and the counts a centre sees. Pure: no I/O, no asyncio; the
agent sends what ``due`` returns and reports back.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from edge_agent.policy.retry import FIRST_RETRY_S, retry_wait


class RolloutTracker:
    def __init__(self, lamps: Iterable[str], version: int, first_retry_s: float = FIRST_RETRY_S) -> None:
        self.version = version
        self.first_retry_s = first_retry_s
        self.reported: dict[str, int | None] = dict.fromkeys(lamps)
        self._sent_at: dict[str, float] = {}  # when the broker took the last copy; inf: in flight
        self._attempts: dict[str, int] = {}
        self.retries = 0

    def install(self, version: int) -> None:
        """A new version is active: every lamp that does not report it is due at once."""
        self.version = version
        self._sent_at.clear()
        self._attempts.clear()

    def report(self, lamp: str, version: int | None) -> None:
        if lamp in self.reported:
            self.reported[lamp] = version

    def due(self, now: float, eligible: Iterable[str] | None = None) -> list[str]:
        """Lamps to send a copy now; marks them in flight and counts retries."""
        if self.version <= 0:
            return []
        lamps = self.reported if eligible is None else eligible
        chosen = []
        for lamp in lamps:
            if self.reported.get(lamp) == self.version:
                continue
            attempts = self._attempts.get(lamp, 0)
            if self._sent_at.get(lamp, -math.inf) + retry_wait(attempts, self.first_retry_s) > now:
                continue
            self._sent_at[lamp] = math.inf
            self._attempts[lamp] = attempts + 1
            if attempts:
                self.retries += 1
            chosen.append(lamp)
        return chosen

    def sent(self, lamp: str, now: float) -> None:
        """The broker (or the bus node) took the copy: the retry clock starts now."""
        self._sent_at[lamp] = now

    def summary(self, gateway: str) -> dict[str, Any]:
        on_version = sum(1 for v in self.reported.values() if v == self.version)
        return {"v": 1, "gateway": gateway, "policy_version": self.version, "lamps": len(self.reported),
                "on_version": on_version, "retries": self.retries}  # fmt: skip
