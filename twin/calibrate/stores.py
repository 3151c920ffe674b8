"""Gateway stores read for calibration: the field history tables (edge_agent/store/history.py).

Owns: opening a gateway's SQLite file read-only and turning its history into plain arrays
(one ``GatewayHistory`` per store), with the notification ledger (table ``notifications``, one
row per channel of each notification: edge_agent/store/notifications.py) when the store has
it. The schema is the contract; the twin does not import the gateway's store code (twin ->
edge_agent.policy only).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_agent.errors import ConfigError, Problem

NEEDED = ("alert_log", "event_log", "motion_hourly", "link_log", "census")
OPEN_NOTIFY = ("notified", "escalated")


@dataclass
class Notification:
    chain: str | None
    start: float
    acked_after: float | None  # seconds, if this responder acknowledged it
    timed_out: bool  # escalated or given up on before any acknowledgement


@dataclass(frozen=True)
class Delivery:
    """One row of the gateway's notification ledger (table ``notifications``): one channel of
    one notification (``n``) of an alert to a responder. Times are epoch seconds."""

    alert_id: str
    n: int
    responder: str
    role: str
    channel: str
    state: str  # waiting | queued | handed | delivered | failed | cancelled
    queued: float
    due: float  # queued + the chain's ``after`` for this channel
    handed: float | None
    delivered: float | None
    failed: float | None

    @property
    def arrived(self) -> float | None:
        """When the message reached the person: the delivery report, or for the app (no report
        beyond the broker taking it) its hand-over."""
        if self.delivered is not None:
            return self.delivered
        return self.handed if self.channel == "app" and self.state in ("handed", "delivered") else None


@dataclass
class GatewayHistory:
    path: str
    since: float
    until: float
    devices: dict[str, tuple[str, str | None, str | None]]  # id -> kind, group, zone
    incidents: list[tuple[str, float]] = field(default_factory=list)  # (event name, ts)
    faults: dict[str, list[tuple[str, float]]] = field(default_factory=dict)  # lamp -> [(fault|repair, ts)]
    motion: list[tuple[float, str, int]] = field(default_factory=list)  # (UTC hour, zone, count)
    links: list[tuple[float, bool]] = field(default_factory=list)  # north (ts, up)
    notifications: list[Notification] = field(default_factory=list)
    resolve_after_ack: list[tuple[str, float]] = field(default_factory=list)  # (rule, seconds)
    ledger: bool = False  # the store has the notification ledger (gateways from the channels on)
    deliveries: list[Delivery] = field(default_factory=list)
    acks: list[tuple[str, str, float]] = field(default_factory=list)  # (alert id, responder, ts)


Query = Callable[[str, tuple[Any, ...]], list[tuple[Any, ...]]]
TABLES = (*NEEDED, "notifications")


def read_store(path: Path, until: float | None = None) -> GatewayHistory:
    """One gateway's history; ``until``: the end of the observation (default: its last record)."""
    if not path.is_file():
        raise ConfigError([Problem(str(path), "", "no such gateway store")])
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        missing = [t for t in NEEDED if t not in tables]
        if missing:
            raise ConfigError(
                [Problem(str(path), "", f"no field history ({', '.join(missing)}): a gateway older than issue 12?")]
            )
        row = db.execute("SELECT value FROM meta WHERE key = 'history.since'").fetchone()
        since = float(row[0]) if row else 0.0

        def query(sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
            return db.execute(sql.format(**{t: t for t in TABLES}), params).fetchall()

        return read_history(query, str(path), since, until, ledger="notifications" in tables)
    finally:
        db.close()


def read_history(
    query: Query, label: str, since: float, until: float | None = None, *, ledger: bool = True
) -> GatewayHistory:
    """One gateway's history from its tables, wherever they are: ``query(sql, params)`` runs
    statements naming the tables as ``{alert_log}``, ``{event_log}``, ... (the store's own
    schema; the centre's mirror gives each as a subquery of one gateway's rows)."""
    last = query(
        "SELECT MAX(t) FROM (SELECT MAX(ts) AS t FROM {alert_log} UNION ALL SELECT MAX(ts) FROM {event_log}"
        " UNION ALL SELECT MAX(hour) + 3600 FROM {motion_hourly} UNION ALL SELECT MAX(ts) FROM {link_log}) AS u",
        (),
    )[0][0]
    h = GatewayHistory(
        label,
        since,
        until if until is not None else float(last or since),
        {str(d): (str(k), g, z) for d, k, g, z in query("SELECT device, kind, grp, zone FROM {census}", ())},
    )
    end = h.until
    for name, ts in query("SELECT name, ts FROM {event_log} WHERE kind = 'wearable' AND ts < ? ORDER BY id", (end,)):
        h.incidents.append((str(name), float(ts)))
    for device, name, ts in query(
        "SELECT device, name, ts FROM {event_log} WHERE kind = 'lamp' AND ts < ? ORDER BY id", (end,)
    ):
        h.faults.setdefault(str(device), []).append((str(name), float(ts)))
    h.motion = [(float(a), str(b), int(c)) for a, b, c in query(
        "SELECT hour, zone, count FROM {motion_hourly} WHERE hour + 3600 <= ? ORDER BY hour, zone",
        (end,))]  # fmt: skip
    h.links = [(float(t), bool(u)) for t, u in query(
        "SELECT ts, up FROM {link_log} WHERE link = 'north' AND ts < ? ORDER BY id", (end,))]  # fmt: skip
    _alerts(query, h)
    if ledger:
        _ledger(query, h)
    return h


def _alerts(query: Query, h: GatewayHistory) -> None:
    """Per notification (a ``notified``/``escalated`` row), what ended it: the same responder's
    acknowledgement, an escalation, or the end of the chain; ended by another responder's
    acknowledgement or still open at the end: left out (neither an ack nor a timeout)."""
    rows: dict[str, list[tuple[str, float, str | None, str | None, str]]] = {}
    for alert, status, ts, responder, chain, rule in query(
        "SELECT alert_id, status, ts, responder, chain, rule FROM {alert_log} WHERE ts < ? ORDER BY id", (h.until,)
    ):
        rows.setdefault(str(alert), []).append((str(status), float(ts), responder, chain, str(rule)))
    for log in rows.values():
        for i, (status, ts, responder, chain, rule) in enumerate(log):
            nxt = log[i + 1] if i + 1 < len(log) else None
            if status == "acknowledged":
                done = next((r for r in log[i + 1 :] if r[0] == "resolved"), None)
                if done is not None:
                    h.resolve_after_ack.append((rule, done[1] - ts))
            if status not in OPEN_NOTIFY or nxt is None:
                continue
            if nxt[0] == "acknowledged":
                if nxt[2] == responder:
                    h.notifications.append(Notification(chain, ts, nxt[1] - ts, False))
            elif nxt[0] in ("escalated", "unacknowledged") or (nxt[0] == "notified" and nxt[2] != responder):
                h.notifications.append(Notification(chain, ts, None, True))


def _ledger(query: Query, h: GatewayHistory) -> None:
    """The notification ledger's rows queued before the end, and the acknowledgements."""
    h.ledger = True
    for row in query(
        "SELECT alert_id, n, responder, role, channel, state, queued, due, handed, delivered, failed"
        " FROM {notifications} WHERE queued < ? ORDER BY id",
        (h.until,),
    ):
        a, n, responder, role, channel, state, queued, due, handed, delivered, failed = row
        h.deliveries.append(
            Delivery(
                str(a), int(n), str(responder), str(role), str(channel), str(state), float(queued), float(due),
                _ts(handed, h.until), _ts(delivered, h.until), _ts(failed, h.until),
            )
        )  # fmt: skip
    h.acks = [(str(a), str(r), float(ts)) for a, r, ts in query(
        "SELECT alert_id, responder, ts FROM {alert_log} WHERE status = 'acknowledged' AND responder IS NOT NULL"
        " AND ts < ? ORDER BY id", (h.until,))]  # fmt: skip


def _ts(value: float | None, until: float) -> float | None:
    """A ledger time, as not yet happened when after the end of the observation."""
    return float(value) if value is not None and float(value) < until else None
