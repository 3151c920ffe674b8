"""Read-only summaries of the gateway's store for its HTTP face (metrics, status page).

Owns: the aggregate queries a scrape or a status refresh runs (outbox depth, bytes and oldest
message per link; alerts by status; the open alerts). They only read, in the agent's own
thread, between its transactions; the store's parts (edge_agent/store/db.py) keep every statement
that writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edge_agent.store.db import Store

OPEN_STATUSES = ("raised", "notified", "escalated", "unacknowledged")


@dataclass(frozen=True)
class OutboxLink:
    messages: int
    payload_bytes: int
    oldest_created: float | None  # the clock time the oldest waiting message was queued


def outbox_by_link(store: Store) -> dict[str, OutboxLink]:
    rows = store.db.execute(
        "SELECT link, COUNT(*), COALESCE(SUM(LENGTH(payload)), 0), MIN(created) FROM outbox GROUP BY link"
    ).fetchall()
    return {str(r[0]): OutboxLink(int(r[1]), int(r[2]), None if r[3] is None else float(r[3])) for r in rows}


def alerts_by_status(store: Store) -> dict[str, int]:
    rows = store.db.execute("SELECT status, COUNT(*) FROM alerts GROUP BY status").fetchall()
    return {str(r[0]): int(r[1]) for r in rows}


def recent_alerts(store: Store, limit: int = 20) -> list[dict[str, Any]]:
    """Open alerts first (newest first), then the most recently closed ones: rows as dicts, which
    the status page reads (the engine's and the store's own alerts are ``models.Alert``)."""
    placeholders = ", ".join("?" * len(OPEN_STATUSES))
    cur = store.db.execute(
        f"SELECT * FROM alerts ORDER BY status IN ({placeholders}) DESC, updated DESC LIMIT ?",
        (*OPEN_STATUSES, limit),
    )
    names = [c[0] for c in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
