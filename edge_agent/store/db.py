"""The gateway's SQLite state: one database, one connection, one transaction at a time, in parts.

Owns: opening the store (schema, columns added since) and putting its parts together on the
one connection (edge_agent/store/transactions.py: ``transaction()``, batches, ``sync()``,
``close()``). Each part owns its tables and every statement against them:

* ``outbox`` (edge_agent/store/outbox.py): messages until acknowledged, its quota, sequences;
* ``alerts`` (edge_agent/store/alerts.py) and ``timers`` (edge_agent/store/timers.py): the
  engine's alert records and persisted timers;
* ``inbox`` (edge_agent/store/inbox.py): inbound messages seen, and dead letters;
* ``counters`` and ``meta`` (edge_agent/store/counters.py);
* ``rule_traces`` (edge_agent/store/traces.py) and ``device_state``
  (edge_agent/store/device_state.py: desired and reported, what AWS calls a device shadow;
  "shadow" here means only shadow mode, a candidate policy run beside the active one): what
  the agent flushes from memory;
* ``history`` (edge_agent/store/history.py): the field history twin/calibrate fits.

A part writes inside the caller's transaction (``with store.transaction(): store.outbox...``):
whatever the parts write in one ``with`` block commits together or not at all.
Must not import: engine, transports, agent.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from edge_agent.store.alerts import Alerts
from edge_agent.store.counters import Counters, Meta
from edge_agent.store.device_state import DeviceState
from edge_agent.store.history import History
from edge_agent.store.inbox import Inbox
from edge_agent.store.notifications import Notifications
from edge_agent.store.outbox import Outbox, add_missing_columns
from edge_agent.store.schema import SCHEMA
from edge_agent.store.timers import Timers
from edge_agent.store.traces import RuleTraces
from edge_agent.store.transactions import Transactions


def _create_schema(db: sqlite3.Connection) -> None:
    add_missing_columns(db)
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "shadow" in tables and "device_state" not in tables:  # a store written before the rename
        db.execute("ALTER TABLE shadow RENAME TO device_state")
    db.executescript(SCHEMA)


class Store(Transactions):
    """One SQLite database per gateway, its parts as attributes. Not thread-safe: used from
    the agent's event loop. Durable means committed *and* ``await store.sync()`` returned."""

    def __init__(self, path: Path | str, quota_bytes: int = 64 << 20) -> None:
        super().__init__(path, _create_schema)
        self.outbox = Outbox(self, quota_bytes)
        self.alerts = Alerts(self.db)
        self.timers = Timers(self.db)
        self.inbox = Inbox(self.db)
        self.counters = Counters(self)
        self.meta = Meta(self.db)
        self.rule_traces = RuleTraces(self)
        self.device_state = DeviceState(self.db)
        self.history = History(self.db)
        self.notifications = Notifications(self.db)
        self.start_syncing()
