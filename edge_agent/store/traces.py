"""Rule traces: what each rule run saw and did (trigger, condition, actions, duration).

Owns: the ``traces`` table, bounded per rule. The engine keeps traces in memory and the agent
flushes them here now and then (edge_agent/agent/loops.py), in a transaction of their own.
"""

from __future__ import annotations

import json
from typing import Any

from edge_agent.store.transactions import Transactions


class RuleTraces:
    def __init__(self, tx: Transactions) -> None:
        self._tx = tx
        self.db = tx.db

    def add(self, traces: list[dict[str, Any]], keep_per_rule: int) -> None:
        """Keep the newest ``keep_per_rule`` traces of each rule (older ones are not even written)."""
        newest: dict[str, list[dict[str, Any]]] = {}
        for trace in reversed(traces):
            kept = newest.setdefault(trace["rule"], [])
            if len(kept) < keep_per_rule:
                kept.append(trace)
        traces = [t for kept in newest.values() for t in reversed(kept)]
        if not traces:
            return
        with self._tx.transaction(durable=False):
            self.db.executemany(
                "INSERT INTO traces (rule, ts, body) VALUES (?, ?, ?)",
                [(t["rule"], t["ts"], json.dumps(t)) for t in traces],
            )
            for rule in {t["rule"] for t in traces}:
                self.db.execute(
                    "DELETE FROM traces WHERE rule = ? AND id NOT IN"
                    " (SELECT id FROM traces WHERE rule = ? ORDER BY id DESC LIMIT ?)",
                    (rule, rule, keep_per_rule),
                )

    def recent(self, rule: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        """Newest first; only ``rule``'s if given."""
        if rule is None:
            rows = self.db.execute("SELECT body FROM traces ORDER BY id DESC LIMIT ?", (limit,))
        else:
            rows = self.db.execute("SELECT body FROM traces WHERE rule = ? ORDER BY id DESC LIMIT ?", (rule, limit))
        return [json.loads(r[0]) for r in rows.fetchall()]
