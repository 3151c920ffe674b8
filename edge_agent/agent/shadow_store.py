"""Shadow mode's own store: the candidate's ``shadow.sqlite3`` and the days kept in it.

Owns: opening the candidate's store (afresh for another candidate), saving and loading one
``ShadowDay``, its derived fields (``settle``), and reading the days back as a ``ShadowReport``
(``read_report``: ``edge-agent shadow report``, the demo). The candidate's engine, the feeding
and the comparison are ``edge_agent.agent.shadow``'s.
Must not import: the app or the other flows.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections import Counter
from pathlib import Path

import msgspec

from edge_agent.config import GatewayConfig
from edge_agent.policy.shadow_report import ShadowDay, ShadowReport
from edge_agent.store.db import Store

__all__ = ["SHADOW_DB", "load_day", "open_shadow_store", "read_days", "read_report", "save_day", "settle"]

log = logging.getLogger("edge_agent")

SHADOW_DB = "shadow.sqlite3"

_DAY = msgspec.json.Decoder(ShadowDay)


def open_shadow_store(path: Path, candidate_sha256: str) -> Store:
    """The candidate's store; a store of another candidate is started afresh (its timers, alerts
    and days belong to that one)."""
    if path.exists():
        store = Store(path)
        if store.meta.get("shadow.candidate_sha256") in (None, candidate_sha256):
            return store
        store.close()
        for leftover in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            leftover.unlink(missing_ok=True)
    return Store(path)


def settle(day: ShadowDay) -> None:
    """The derived fields: publishes of one side the other did not make, by topic."""
    active, candidate = Counter(day.published_active), Counter(day.published_candidate)
    day.published_only_active = dict(active - candidate)
    day.published_only_candidate = dict(candidate - active)


def save_day(store: Store, day: ShadowDay) -> None:
    """Keep ``day`` (settled) in the shadow store; a store error is logged, never raised."""
    settle(day)
    try:
        with store.transaction(durable=False):
            index = json.loads(store.meta.get("shadow.index") or "[]")
            if day.day not in index:
                store.meta.set("shadow.index", json.dumps([*index, day.day]))
            store.meta.set(f"shadow.day.{day.day}", msgspec.json.encode(day).decode())
    except sqlite3.Error as exc:
        log.warning("shadow: the day %s is not saved: %s", day.day, exc)


def load_day(store: Store, key: str) -> ShadowDay | None:
    """The day ``key`` (ISO date) as last saved, or None."""
    raw = store.meta.get(f"shadow.day.{key}")
    return None if raw is None else _DAY.decode(raw)


def read_days(store: Store, gateway: str) -> ShadowReport | None:
    """Every day kept in the shadow store as a report (None: no candidate ever ran there)."""
    sha, started = store.meta.get("shadow.candidate_sha256"), store.meta.get("shadow.started")
    if sha is None or started is None:
        return None
    days = []
    for key in json.loads(store.meta.get("shadow.index") or "[]"):
        day = load_day(store, key)
        if day is not None:
            days.append(day)
    return ShadowReport(
        gateway=gateway,
        candidate=store.meta.get("shadow.candidate") or "?",
        candidate_sha256=sha,
        days_planned=int(store.meta.get("shadow.days") or 0),
        started=started,
        days=days,
    )


def read_report(config: GatewayConfig) -> ShadowReport | None:
    """The shadow report kept in the data dir (None: shadow mode never ran there)."""
    path = config.data_dir / SHADOW_DB
    if not path.exists():
        return None
    store = Store(path)
    try:
        return read_days(store, config.id)
    finally:
        store.close()
