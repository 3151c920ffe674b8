"""The field history, shipped north: what ``twin calibrate --centre`` fits from, and the health
the centre's console shows.

Owns: the ``history`` and ``health`` topics' payloads and the marks that say what was shipped.

``history`` (``district/v1/<gw>/history``, QoS 1, through the durable outbox with ``msg_id`` and
``seq``): the ROWS of the gateway's history tables (edge_agent/store/history.py and the
notification ledger, edge_agent/store/notifications.py), in order, in batches of at most
``BATCH`` rows::

    {"v":1, "table":"alert_log", "since":<history start>, "columns":[...], "rows":[[...], ...],
     "msg_id":..., "seq":..., "gateway":...}

Append-only tables (``alert_log``, ``event_log``, ``link_log``) go by id above a high-water mark
kept in the store's ``meta`` (``north.history.<table>``), moved in the same transaction that
queues the batch: a restart neither skips a row nor sends one twice (beyond the outbox's
at-least-once, which the centre's upserts absorb). Tables whose rows change (``motion_hourly``:
the current hour's count; ``notifications``: a row's state; ``census``) send the rows that can
still change (from the oldest row that could, see ``_WINDOWS``; a notification still open a day after the
newest one is taken as settled: a later change of it is not sent) whenever their content differs
from what was last queued (a digest in ``meta``): the centre upserts them by key.

``health`` (``district/v1/<gw>/health``, retained, through the outbox so it survives an outage):
``{"v":1,"gateway","ts","outbox":<north messages pending>,"uplink_outages":<count>,
"policy_version":<active>}`` at connect and every ``HEALTH_S`` of the agent's clock.

Sent only with an uplink configured (the caller starts ``run`` only then).
Must not import: the app, the intake, the engine.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
from collections.abc import Callable
from typing import Any

import msgspec

from edge_agent.agent import topics
from edge_agent.agent.context import GatewayContext
from edge_agent.store.outbox import EVENT_PRIORITY
from edge_agent.transports.link import Link

log = logging.getLogger("edge_agent")

BATCH = 500  # rows per history message
SHIP_S = 10.0  # agent-clock seconds between looks at the history tables
HEALTH_S = 60.0  # agent-clock seconds between health reports
SETTLE_S = 86400.0  # a notification still open this long after the newest one is taken as settled

# table -> its columns as sent (the store's own names; the centre mirrors them)
COLUMNS: dict[str, tuple[str, ...]] = {
    "alert_log": ("id", "alert_id", "ts", "status", "step", "responder", "rule", "chain", "device", "priority"),
    "event_log": ("id", "ts", "device", "kind", "name", "grp", "detail"),
    "link_log": ("id", "ts", "link", "up"),
    "motion_hourly": ("hour", "zone", "count"),
    "census": ("device", "kind", "grp", "zone", "since"),
    "notifications": (
        "id", "alert_id", "n", "step", "responder", "role", "channel", "state", "reason",
        "due", "queued", "handed", "delivered", "failed",
    ),
}  # fmt: skip
APPEND_ONLY = ("alert_log", "event_log", "link_log")
# tables whose rows change: (key column the window runs over, the next window's start: the
# oldest row that may still change, or past the newest when none may). A row changed since the
# last batch lies at or after the start stored then, so it is always inside the window.
_WINDOWS: dict[str, tuple[str, str]] = {
    "motion_hourly": ("hour", "SELECT MAX(hour) FROM motion_hourly"),  # the newest hour still counts
    "census": ("since", "SELECT MIN(since) FROM census"),  # a device's group or zone may be edited
    "notifications": (  # open rows of the last SETTLE_S (an app row stays "handed" for good)
        "id",
        "SELECT COALESCE((SELECT MIN(id) FROM notifications WHERE state IN ('waiting', 'queued', 'handed')"
        f" AND queued >= (SELECT MAX(queued) FROM notifications) - {SETTLE_S}),"
        " (SELECT MAX(id) + 1 FROM notifications))",
    ),
}


def history_batches(db: sqlite3.Connection, meta_get: Callable[[str], str | None]) -> list[tuple[str, dict[str, Any]]]:
    """What is due north now, in order: (meta key, body). A body with ``_mark`` is a message
    (its mark to store under the key once queued; "" for none); a body with only ``_set`` is a
    mark to store. Read inside the caller's transaction."""
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    row = db.execute("SELECT value FROM meta WHERE key = 'history.since'").fetchone()
    since = float(row[0]) if row else None
    out: list[tuple[str, dict[str, Any]]] = []
    for table in APPEND_ONLY:
        if table not in tables:
            continue
        mark = int(meta_get(f"north.history.{table}") or 0)
        cols = COLUMNS[table]
        rows = db.execute(
            f"SELECT {', '.join(cols)} FROM {table} WHERE id > ? ORDER BY id",
            (mark,),
        ).fetchall()
        for start in range(0, len(rows), BATCH):
            chunk = [list(r) for r in rows[start : start + BATCH]]
            out.append((f"north.history.{table}", _body(table, since, cols, chunk, str(chunk[-1][0]))))
    for table, (key, next_start) in _WINDOWS.items():
        if table not in tables:
            continue
        cols = COLUMNS[table]
        start_key = f"north.history.{table}.start"
        stored = meta_get(start_key)
        rows = db.execute(
            f"SELECT {', '.join(cols)} FROM {table} WHERE {key} >= ? ORDER BY {key}, {cols[1]}",
            (float(stored) if stored is not None else float("-inf"),),
        ).fetchall()
        if not rows:
            continue
        if meta_get(f"north.history.{table}.digest") == _digest(rows):
            continue
        for start in range(0, len(rows), BATCH):
            out.append(("", _body(table, since, cols, [list(r) for r in rows[start : start + BATCH]], "")))
        # the next window, and what it holds now: sent again only once that changes
        following = float(db.execute(next_start).fetchone()[0])
        at = cols.index(key)
        out.append((f"north.history.{table}.digest", {"_set": _digest([r for r in rows if r[at] >= following])}))
        out.append((start_key, {"_set": repr(following)}))
    return out


def _digest(rows: list[Any]) -> str:
    return hashlib.sha256(msgspec.json.encode([list(r) for r in rows])).hexdigest()[:32]


def _body(table: str, since: float | None, cols: tuple[str, ...], rows: list[list[Any]], mark: str) -> dict[str, Any]:
    return {"table": table, "since": since, "columns": list(cols), "rows": rows, "_mark": mark}


class HistoryNorth:
    """Ships the history and the health north (``run``, started by the agent with an uplink)."""

    def __init__(self, context: GatewayContext, enqueue_north: Callable[[str, dict[str, Any], str, int], None]) -> None:
        self.context = context
        self.gateway = context.gateway
        self.store = context.store
        self.clock = context.clock
        self.enqueue_north = enqueue_north  # Outbound._enqueue_north: msg_id + seq, the outbox

    def ship(self) -> int:
        """Queue whatever history is due, marks moved in the same transaction. Messages queued."""
        queued = 0
        with self.store.transaction(durable=False):
            for key, body in history_batches(self.store.db, self.store.meta.get):
                if "_set" in body:
                    self.store.meta.set(key, str(body["_set"]))
                    continue
                mark = body.pop("_mark")
                self.enqueue_north(topics.history(self.gateway), body, "history", EVENT_PRIORITY)
                queued += 1
                if key:
                    self.store.meta.set(key, mark)
        return queued

    def health(self) -> dict[str, Any]:
        backlog = self.store.outbox.backlog().get("north")
        row = self.store.db.execute("SELECT COUNT(*) FROM link_log WHERE link = 'north' AND up = 0").fetchone()
        return {
            "v": 1,
            "gateway": self.gateway,
            "ts": self.clock.now(),
            "outbox": backlog.messages if backlog is not None else 0,
            "uplink_outages": int(row[0]),
            "policy_version": self.context.active.version,
        }

    def report_health(self) -> None:
        """The retained health report, queued (replaces nothing: the broker keeps the last one)."""
        payload = msgspec.json.encode(self.health())
        with self.store.transaction(durable=False):
            self.store.outbox.enqueue(
                "north",
                topics.health(self.gateway),
                payload,
                priority=EVENT_PRIORITY,
                now=self.clock.now(),
                retain=True,
            )
        self.context.links.wake["north"].set()

    async def run(self, link: Link) -> None:
        """Until cancelled: history every ``SHIP_S``, health at each connect and every ``HEALTH_S``."""
        last_health = -HEALTH_S
        was_up = False
        while True:
            now = self.clock.now()
            try:
                self.ship()
                up = link.connected
                if (up and not was_up) or now - last_health >= HEALTH_S:
                    self.report_health()
                    last_health = now
                was_up = up
            except sqlite3.Error as exc:  # the next round
                log.warning("history not queued north: %s", exc)
            await self.clock.sleep_until(self.clock.now() + SHIP_S)
