"""Gateway history read from the district centre's database (``twin calibrate --centre``).

Owns: turning the centre's mirror of the gateways' history tables (centre/migrations/
002_history.sql, filled from the gateways' ``history`` messages) into the same
``GatewayHistory`` per gateway as reading each gateway's store (``twin.calibrate.stores``):
the same statements, run over one gateway's rows of each mirrored table.
Must not import: centre but centre.db; edge_agent.store/agent/engine.
"""

from __future__ import annotations

from typing import Any

from centre.db import Database, open_database
from edge_agent.errors import ConfigError, Problem
from twin.calibrate.stores import TABLES, GatewayHistory, read_history


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def centre_gateways(db: Database) -> list[str]:
    """Gateways with history in the centre (a census or a log row), sorted."""
    rows = db.query("SELECT gateway FROM history_census UNION SELECT gateway FROM history_since")
    return sorted(str(r[0]) for r in rows)


def read_gateway(db: Database, gateway: str, until: float | None = None) -> GatewayHistory:
    """One gateway's history as the centre holds it."""
    since_rows = db.query("SELECT since FROM history_since WHERE gateway = ?", (gateway,))
    since = float(since_rows[0][0]) if since_rows else 0.0
    subqueries = {t: f"(SELECT * FROM history_{t} WHERE gateway = {_literal(gateway)}) AS {t}" for t in TABLES}

    def query(sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        return db.query(sql.format(**subqueries), params)

    # every gateway that ships history has the notification ledger (both came before issue 21)
    return read_history(query, f"centre:{gateway}", since, until, ledger=True)


def read_centre(url: str, district: str, until: float | None = None) -> list[GatewayHistory]:
    """Every gateway's history in the centre at ``url`` (the centre of ``district``)."""
    with open_database(url, migrate=False) as db:
        try:
            gateways = centre_gateways(db)
        except Exception as exc:
            raise ConfigError([Problem(url, "--centre", f"no gateway history here (not migrated?): {exc}")]) from exc
        if not gateways:
            raise ConfigError([Problem(url, "--centre", f"no gateway of district {district!r} has sent history yet")])
        return [read_gateway(db, gateway, until) for gateway in gateways]
