"""What the console shows, read from the centre's database in one go.

Owns: ``read_snapshot(db, now)``: plain data (dicts, lists, numbers) for the page: every
gateway, the open alerts with who was reached how (the notification ledger the gateways ship), the open
lamp faults, energy per day and group (``lamp_hours`` joined to ``lamps.lamp_group``; group ''
is named after its gateway; days are UTC days) and the rollouts in progress, then those that
ended in the last day (newest first, at most ``ENDED_ROLLOUTS``), with their targets counted by
state. Blocking (the server calls it in a worker thread).
Must not import: the server, the pages, the service.
"""

from __future__ import annotations

from typing import Any

from centre.db import Database, Tx

OPEN_STATUSES = ("raised", "notified", "escalated", "queued", "unacknowledged", "acknowledged")
ACKABLE = ("notified", "escalated", "queued", "unacknowledged")  # the gateway waits for someone
ENERGY_DAYS = 14
MAX_ALERTS = 200
MAX_FAULTS = 200
ENDED_ROLLOUTS = 5  # rollouts that ended in the last day, shown after the running ones
TARGET_STATES = ("QUEUED", "IN_PROGRESS", "SUCCEEDED", "REJECTED", "TIMED_OUT", "CANCELED")
FINISHED = ("SUCCEEDED", "REJECTED", "TIMED_OUT", "CANCELED")


def _gateways(tx: Tx) -> list[dict[str, Any]]:
    rows = tx.query(
        "SELECT gateway, online, status_changed, last_seen, policy_version, lamps, lamps_on_version, "
        "outbox_depth, outages FROM gateways ORDER BY gateway"
    )
    return [
        {
            "gateway": r[0],
            "online": bool(r[1]),
            "status_changed": r[2],
            "last_seen": r[3],
            "policy_version": r[4],
            "lamps": int(r[5] or 0),
            "lamps_on_version": int(r[6] or 0),
            "outbox_depth": r[7],
            "outages": int(r[8] or 0),
        }
        for r in rows
    ]


def _alerts(tx: Tx) -> list[dict[str, Any]]:
    marks = ", ".join("?" for _ in OPEN_STATUSES)
    rows = tx.query(
        "SELECT alert_id, gateway, device, kind, priority, rule, message, status, responder, step, raised, updated "
        f"FROM alerts WHERE status IN ({marks}) ORDER BY priority, raised DESC LIMIT {MAX_ALERTS}",
        OPEN_STATUSES,
    )
    alerts = [
        {
            "alert_id": r[0],
            "gateway": r[1],
            "device": r[2],
            "kind": r[3],
            "priority": int(r[4]),
            "rule": r[5],
            "message": r[6],
            "status": r[7],
            "responder": r[8],
            "step": r[9],
            "raised": float(r[10]),
            "updated": float(r[11]),
            "reached": [],
            "channels": [],
            "ackable": r[7] in ACKABLE,
        }
        for r in rows
    ]
    if alerts:
        _reached(tx, alerts)
    return alerts


def _reached(tx: Tx, alerts: list[dict[str, Any]]) -> None:
    """Who was reached and how, from the gateway's notification ledger as it ships it north
    (``history_notifications``, every few seconds): the responders in the order they were
    offered the alert, and each channel of the latest step with how far it got
    (``sms delivered``, ``ring failed``, ...)."""
    ids = [a["alert_id"] for a in alerts]
    marks = ", ".join("?" for _ in ids)
    ledger: dict[tuple[str, str], list[tuple[int, str, str, str]]] = {}
    for gateway, alert_id, step, responder, channel, state in tx.query(
        "SELECT gateway, alert_id, step, responder, channel, state FROM history_notifications "
        f"WHERE alert_id IN ({marks}) ORDER BY step, n, id",
        ids,
    ):
        ledger.setdefault((str(gateway), str(alert_id)), []).append((int(step), responder, channel, state))
    for a in alerts:
        rows = ledger.get((a["gateway"], a["alert_id"]), [])
        a["reached"] = list(dict.fromkeys(str(r[1]) for r in rows))
        latest = max((r[0] for r in rows), default=0)
        a["channels"] = list(dict.fromkeys(f"{r[2]} {r[3]}" for r in rows if r[0] == latest))


def _faults(tx: Tx) -> list[dict[str, Any]]:
    rows = tx.query(
        "SELECT gateway, lamp, since, faults FROM lamp_faults WHERE cleared IS NULL "
        f"ORDER BY since DESC LIMIT {MAX_FAULTS}"
    )
    return [{"gateway": r[0], "lamp": r[1], "since": float(r[2]), "faults": int(r[3])} for r in rows]


def _energy(tx: Tx, now: float) -> dict[str, Any]:
    """{"days": [day start, ...], "series": {name: [Wh per day]}} for the last ENERGY_DAYS UTC days."""
    today = int(now // 86400) * 86400
    first = today - (ENERGY_DAYS - 1) * 86400
    rows = tx.query(
        "SELECT h.gateway, COALESCE(l.lamp_group, ''), h.hour, SUM(h.energy_wh) FROM lamp_hours h "
        "LEFT JOIN lamps l ON l.gateway = h.gateway AND l.lamp = h.lamp WHERE h.hour >= ? "
        "GROUP BY h.gateway, COALESCE(l.lamp_group, ''), h.hour",
        (first,),
    )
    days = [first + i * 86400 for i in range(ENERGY_DAYS)]
    series: dict[str, list[float]] = {}
    for gateway, group, hour, wh in rows:
        index = (int(hour) - first) // 86400
        if not 0 <= index < ENERGY_DAYS:
            continue
        name = str(group) or str(gateway)
        series.setdefault(name, [0.0] * ENERGY_DAYS)[index] += float(wh or 0.0)
    return {"days": days, "series": dict(sorted(series.items()))}


def _rollouts(tx: Tx, now: float) -> list[dict[str, Any]]:
    running = tx.query(
        "SELECT rollout_id, version, state, wave, created, updated FROM rollouts "
        "WHERE state IN ('running', 'waiting_window') ORDER BY created"
    )
    ended = tx.query(
        "SELECT rollout_id, version, state, wave, created, updated FROM rollouts "
        "WHERE state NOT IN ('running', 'waiting_window') AND updated >= ? ORDER BY updated DESC LIMIT ?",
        (now - 86_400.0, ENDED_ROLLOUTS),
    )
    rows = [*running, *ended]
    rollouts = []
    for r in rows:
        counts = dict.fromkeys(TARGET_STATES, 0)
        for state, count in tx.query(
            "SELECT state, COUNT(*) FROM rollout_targets WHERE rollout_id = ? GROUP BY state", (r[0],)
        ):
            counts[str(state)] = int(count)
        total = sum(counts.values())
        done = sum(counts[s] for s in FINISHED)
        rollouts.append(
            {
                "rollout_id": r[0],
                "version": int(r[1]),
                "state": r[2],
                "wave": int(r[3]),
                "created": float(r[4]),
                "counts": counts,
                "total": total,
                "done": done,
            }
        )
    return rollouts


def read_snapshot(db: Database, now: float) -> dict[str, Any]:
    with db.transaction() as tx:  # one consistent read (a transaction on both databases)
        return {
            "gateways": _gateways(tx),
            "alerts": _alerts(tx),
            "faults": _faults(tx),
            "energy": _energy(tx, now),
            "rollouts": _rollouts(tx, now),
        }
