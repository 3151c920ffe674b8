"""The open alerts dispatch must remember across a restart.

Owns: the read that rebuilds the gateway's dispatch state (edge_agent/engine/dispatching.py):
alerts with a chain still notified, escalated, queued or acknowledged (a responder busy until
it is resolved), oldest change first, which is the order queued alerts wait in. ``db.py`` keeps
the schema and every statement that writes.
"""

from __future__ import annotations

from typing import Any

from edge_agent.store.db import Store

DISPATCH_OPEN = ("notified", "escalated", "queued", "acknowledged")


def open_dispatch_alerts(store: Store) -> list[dict[str, Any]]:
    placeholders = ", ".join("?" * len(DISPATCH_OPEN))
    cur = store.db.execute(
        f"SELECT * FROM alerts WHERE chain IS NOT NULL AND status IN ({placeholders}) ORDER BY updated, created",
        DISPATCH_OPEN,
    )
    names = [c[0] for c in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
