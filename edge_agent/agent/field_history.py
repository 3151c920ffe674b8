"""The uplink's outages, logged for calibration (``edge_agent.store.history.link_log``).

Owns: watching the north link and logging each change of its state (down, back up) with the
agent's clock. Polled once a second: an outage shorter than that may go unlogged, which
calibration (minutes-long outages) can afford; the transport stays free of our store.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3

from edge_agent.clock import Clock
from edge_agent.store.db import Store
from edge_agent.transports.link import Link

log = logging.getLogger("edge_agent")
POLL_S = 1.0


async def watch_uplink(store: Store, clock: Clock, link: Link) -> None:
    """Log ``link`` down/up in the store's ``link_log`` until cancelled. The first state is
    logged once the link first connects (a gateway starting without an uplink is not an
    outage until it has had one)."""
    logged: bool | None = None
    while True:
        up = link.connected
        if up != logged and (logged is not None or up):
            try:
                with store.transaction(durable=False):
                    store.history.record_link(link.name, up, clock.now())
                logged = up
            except sqlite3.Error as exc:  # next poll
                log.warning("uplink state not logged: %s", exc)
        await asyncio.sleep(POLL_S)
