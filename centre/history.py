"""The gateways' ``history`` and ``health`` messages, stored (migration 002_history.sql).

Owns: checking those two bodies and writing them, each an idempotent upsert by the rows'
natural keys (the gateway's own row ids, hours and zones, device ids), so an at-least-once
redelivery changes nothing. The ingest calls ``HANDLERS[topic_class](tx, gateway, body, now)``
inside its transaction; a bad body raises ``HistoryError`` (the ingest counts a reject).

``history`` (edge_agent/agent/history_north.py): ``{"v":1, "table", "since", "columns", "rows"}``
-> ``history_<table>`` (+ ``history_since``). ``health``: ``{"v":1, "ts", "outbox",
"uplink_outages", ...}`` -> ``gateways.outbox_depth`` and ``gateways.outages`` (the larger of the
gateway's own count and the centre's, which counts last wills).
Must not import: anything of ours but centre.db and edge_agent.errors.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

from centre.db import Tx

Handler = Callable[[Tx, str, Mapping[str, Any], float], None]


def _ingest() -> ModuleType | None:
    """The ingest's handler registry (centre/ingest_batch.py), when this centre has it."""
    try:
        return importlib.import_module("centre.ingest_batch")
    except ModuleNotFoundError:
        return None


_INGEST = _ingest()
_Rejected: type[Exception] = getattr(_INGEST, "RejectedError", ValueError)


class HistoryError(_Rejected):  # type: ignore[valid-type,misc]
    """A ``history`` or ``health`` body the centre cannot store; the message says what and where.
    The ingest's ``RejectedError`` (reason ``schema``) when the ingest is there: counted, acknowledged."""

    def __init__(self, detail: str) -> None:
        if _Rejected is ValueError:
            super().__init__(detail)
        else:
            super().__init__("schema", detail)
        self.detail = detail


# per table: (key columns, {column: type}) - types: int, float, str; a trailing ? allows null
_STR, _INT, _FLOAT = "str", "int", "float"
TABLES: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    "alert_log": (
        ("id",),
        {"id": _INT, "alert_id": _STR, "ts": _FLOAT, "status": _STR, "step": _INT, "responder": "str?",
         "rule": _STR, "chain": "str?", "device": _STR, "priority": _INT},
    ),
    "event_log": (
        ("id",),
        {"id": _INT, "ts": _FLOAT, "device": _STR, "kind": _STR, "name": _STR, "grp": "str?", "detail": "int?"},
    ),
    "link_log": (("id",), {"id": _INT, "ts": _FLOAT, "link": _STR, "up": _INT}),
    "motion_hourly": (("hour", "zone"), {"hour": _FLOAT, "zone": _STR, "count": _INT}),
    "census": (("device",), {"device": _STR, "kind": _STR, "grp": "str?", "zone": "str?", "since": _FLOAT}),
    "notifications": (
        ("id",),
        {"id": _INT, "alert_id": _STR, "n": _INT, "step": _INT, "responder": _STR, "role": _STR, "channel": _STR,
         "state": _STR, "reason": "str?", "due": _FLOAT, "queued": _FLOAT, "handed": "float?",
         "delivered": "float?", "failed": "float?"},
    ),
}  # fmt: skip


def _value(kind: str, value: Any, where: str) -> Any:
    if value is None:
        if kind.endswith("?"):
            return None
        raise HistoryError(f"{where}: null where a value is required")
    base = kind.rstrip("?")
    if base == _STR:
        if not isinstance(value, str):
            raise HistoryError(f"{where}: expected text, got {type(value).__name__}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise HistoryError(f"{where}: expected a number, got {type(value).__name__}")
    if base == _INT:
        if value != int(value):
            raise HistoryError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    return float(value)


def store_history(tx: Tx, gateway: str, body: Mapping[str, Any], now: float) -> None:
    """One ``history`` message: its rows upserted into ``history_<table>``."""
    if body.get("v") != 1:
        raise HistoryError(f"history from {gateway}: unsupported version v={body.get('v')!r} (expected 1)")
    table = body.get("table")
    if table not in TABLES:
        raise HistoryError(f"history from {gateway}: unknown table {table!r} (expected one of {', '.join(TABLES)})")
    keys, types = TABLES[table]
    columns = body.get("columns")
    if not isinstance(columns, list) or sorted(map(str, columns)) != sorted(types):
        raise HistoryError(f"history from {gateway}, table {table}: columns {columns!r}, expected {list(types)}")
    rows = body.get("rows")
    if not isinstance(rows, list):
        raise HistoryError(f"history from {gateway}, table {table}: 'rows' must be a list")
    since = body.get("since")
    if since is not None:
        since = _value(_FLOAT, since, f"history from {gateway}: since")
    cleaned = []
    for i, row in enumerate(rows):
        where = f"history from {gateway}, table {table}, row {i}"
        if not isinstance(row, list) or len(row) != len(columns):
            raise HistoryError(f"{where}: expected a list of {len(columns)} values")
        cleaned.append(
            [gateway] + [_value(types[c], v, f"{where}, column {c}") for c, v in zip(columns, row, strict=True)]
        )
    names = ["gateway", *map(str, columns)]
    updates = ", ".join(f"{c} = excluded.{c}" for c in names if c not in keys and c != "gateway")
    sql = (
        f"INSERT INTO history_{table} ({', '.join(names)}) VALUES ({', '.join('?' for _ in names)})"
        f" ON CONFLICT (gateway, {', '.join(keys)}) DO UPDATE SET {updates}"
    )
    if cleaned:
        tx.executemany(sql, cleaned)
    if since is not None:
        tx.execute(
            "INSERT INTO history_since (gateway, since) VALUES (?, ?) ON CONFLICT (gateway) DO NOTHING",
            (gateway, since),
        )


def store_health(tx: Tx, gateway: str, body: Mapping[str, Any], now: float) -> None:
    """One ``health`` report: the gateway's outbox depth and its uplink outages (the larger count)."""
    if body.get("v") != 1:
        raise HistoryError(f"health from {gateway}: unsupported version v={body.get('v')!r} (expected 1)")
    depth = _value(_INT, body.get("outbox"), f"health from {gateway}: outbox")
    outages = _value(_INT, body.get("uplink_outages"), f"health from {gateway}: uplink_outages")
    if depth < 0 or outages < 0:
        raise HistoryError(f"health from {gateway}: negative counts (outbox={depth}, uplink_outages={outages})")
    tx.execute(
        "INSERT INTO gateways (gateway, outbox_depth, outages) VALUES (?, ?, ?)"
        " ON CONFLICT (gateway) DO UPDATE SET outbox_depth = excluded.outbox_depth,"
        " outages = CASE WHEN excluded.outages > gateways.outages THEN excluded.outages ELSE gateways.outages END",
        (gateway, depth, outages),
    )


# topic class (edge_agent/agent/topics.py) -> handler, registered with the ingest on import
# (centre/service.py imports this module to subscribe to and take these classes)
HANDLERS: dict[str, Handler] = {"history": store_history, "health": store_health}
if _INGEST is not None:
    for _name, _handler in HANDLERS.items():
        _INGEST.register_handler(_name, _handler)
