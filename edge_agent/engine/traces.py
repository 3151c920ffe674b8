"""Rule traces in memory: the newest of each rule, and those not yet saved.

Owns: ``TraceBuffer``. The engine adds a trace per rule run (and per command and dispatch
change); the agent takes the unsaved ones now and then and stores them
(edge_agent/store/traces.py). Bounded: ``per_rule`` kept per rule, the newest 10,000 unsaved.
"""

from __future__ import annotations

from collections import deque
from typing import Any


class TraceBuffer:
    UNSAVED_KEEP = 10_000

    def __init__(self, per_rule: int) -> None:
        self.per_rule = per_rule
        self.by_rule: dict[str, deque[dict[str, Any]]] = {}
        self.unsaved: deque[dict[str, Any]] = deque(maxlen=self.UNSAVED_KEEP)

    def add(self, trace: dict[str, Any]) -> None:
        kept = self.by_rule.get(trace["rule"])
        if kept is None:
            kept = self.by_rule[trace["rule"]] = deque(maxlen=self.per_rule)
        kept.append(trace)
        self.unsaved.append(trace)  # bounded: the oldest unsaved ones fall off

    def take(self) -> list[dict[str, Any]]:
        """The unsaved traces, oldest first; none are unsaved after."""
        traces = list(self.unsaved)
        self.unsaved.clear()
        return traces
