"""One batch of parsed north messages written in one transaction, one statement per table.

Owns: the SQL of ingestion. Order inside a batch: de-duplicate by ``msg_id`` (one
``INSERT ... ON CONFLICT DO NOTHING RETURNING``: what comes back is new), then per class
``executemany`` in message order: gateways' ``last_seen``, status (``outages`` counts each
online -> offline change), alerts (the latest change by ``ts`` wins; an older one redelivered never
regresses the row) and every change, lamps, raw telemetry, hourly roll-ups (energy from the
positive deltas of each lamp's meter), fault episodes, policy acks, rollout summaries, shadow
days, messages of registered classes, and the counted rejects. On PostgreSQL the bulk of a
batch (message ids, last seen, lamps, raw telemetry, roll-ups) goes as one statement per table
over ``unnest`` of column arrays (``_many``): a round trip per row was most of a batch's time.
Must not import: the service, the console, the rollout driver.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from centre.db import Tx
from centre.ingest_batch import Batch, Item, run_extra

_json = msgspec.json.Encoder()
_CHUNK = 300  # rows per multi-row INSERT (3 parameters each: far below SQLite's limit)

LAST_SEEN = (
    "INSERT INTO gateways (gateway, last_seen) VALUES (?, ?) ON CONFLICT (gateway) DO UPDATE SET "
    "last_seen = CASE WHEN gateways.last_seen IS NULL OR excluded.last_seen > gateways.last_seen "
    "THEN excluded.last_seen ELSE gateways.last_seen END"
)
STATUS = (
    "INSERT INTO gateways (gateway, online, status_changed, last_seen) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (gateway) DO UPDATE SET "
    "outages = gateways.outages + CASE WHEN gateways.online = 1 AND excluded.online = 0 THEN 1 ELSE 0 END, "
    "status_changed = CASE WHEN gateways.online <> excluded.online OR gateways.status_changed IS NULL "
    "THEN excluded.status_changed ELSE gateways.status_changed END, "
    "online = excluded.online"
)
_ALERT_FIELDS = ("gateway", "device", "kind", "priority", "rule", "message", "status", "responder", "step", "updated")
ALERT = (
    "INSERT INTO alerts (alert_id, gateway, device, kind, priority, rule, message, status, responder, step, "
    "updated, raised) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (alert_id) DO UPDATE SET "
    + ", ".join(
        f"{name} = CASE WHEN excluded.updated >= alerts.updated THEN excluded.{name} ELSE alerts.{name} END"
        for name in _ALERT_FIELDS
    )
    + ", raised = CASE WHEN excluded.raised < alerts.raised THEN excluded.raised ELSE alerts.raised END"
)
ALERT_CHANGE = (
    "INSERT INTO alert_changes (msg_id, alert_id, gateway, ts, status, responder, step, body) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (msg_id) DO NOTHING"
)
LAMP = (
    "INSERT INTO lamps (gateway, lamp, lamp_group, on_, level, power_w, energy_wh, burn_hours, faults, "
    "policy_version, last_report) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (gateway, lamp) DO UPDATE SET "
    + ", ".join(
        f"{name} = excluded.{name}"
        for name in (
            "lamp_group",
            "on_",
            "level",
            "power_w",
            "energy_wh",
            "burn_hours",
            "faults",
            "policy_version",
            "last_report",
        )
    )
)
TELEMETRY = "INSERT INTO lamp_telemetry (msg_id, gateway, lamp, ts, body) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
HOUR = (
    "INSERT INTO lamp_hours (gateway, lamp, hour, reports, energy_wh, level_sum, power_w_max, faults) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (gateway, lamp, hour) DO UPDATE SET "
    "reports = lamp_hours.reports + excluded.reports, energy_wh = lamp_hours.energy_wh + excluded.energy_wh, "
    "level_sum = lamp_hours.level_sum + excluded.level_sum, "
    "power_w_max = CASE WHEN excluded.power_w_max > lamp_hours.power_w_max "
    "THEN excluded.power_w_max ELSE lamp_hours.power_w_max END, "
    "faults = lamp_hours.faults | excluded.faults"
)
FAULT_OPEN = (
    "INSERT INTO lamp_faults (gateway, lamp, since, faults) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (gateway, lamp, since) DO UPDATE SET faults = lamp_faults.faults | excluded.faults"
)
FAULT_MORE = "UPDATE lamp_faults SET faults = faults | ? WHERE gateway = ? AND lamp = ? AND cleared IS NULL"
FAULT_CLEAR = "UPDATE lamp_faults SET cleared = ? WHERE gateway = ? AND lamp = ? AND cleared IS NULL"
ACK = (
    "INSERT INTO policy_acks (gateway, version, status, reason, ts, received) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (gateway, version, status) DO UPDATE SET reason = excluded.reason, ts = excluded.ts, "
    "received = excluded.received"
)
ROLLOUT = (
    "UPDATE gateways SET lamps = ?, lamps_on_version = ?, policy_version = COALESCE(?, policy_version) "
    "WHERE gateway = ?"
)
SHADOW = (
    "INSERT INTO shadow_reports (gateway, candidate, day, body) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (gateway, candidate, day) DO UPDATE SET body = excluded.body"
)
REJECT = (
    "INSERT INTO rejects (reason, topic_class, count, last_detail, last_ts) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (reason, topic_class) DO UPDATE SET count = rejects.count + excluded.count, "
    "last_detail = excluded.last_detail, last_ts = excluded.last_ts"
)


NEW_LAMP = "INSERT INTO lamps (gateway, lamp) VALUES (?, ?) ON CONFLICT (gateway, lamp) DO NOTHING"
LAMP_TYPES = ("text", "text", "text", "int4", "float8", "float8", "float8", "float8", "int4", "int4", "float8")
HOUR_TYPES = ("text", "text", "int8", "int4", "float8", "float8", "float8", "int4")
_unnest: dict[str, str] = {}


def _many(tx: Tx, dialect: str, sql: str, rows: Sequence[Sequence[Any]], types: Sequence[str]) -> None:
    """``executemany`` of one ``INSERT ... VALUES (?, ...)``; on PostgreSQL ONE statement with
    the columns as arrays (``SELECT * FROM unnest(?::text[], ...)``): a row per round trip was
    most of a batch's time. The rows' conflict keys must be distinct (an upsert may not touch a
    row twice in one statement): every caller passes rows keyed by their conflict target."""
    if not rows:
        return
    if dialect != "postgresql":
        tx.executemany(sql, rows)
        return
    converted = _unnest.get(sql)
    if converted is None:
        values = "VALUES (" + ", ".join(["?"] * len(types)) + ")"
        assert sql.count(values) == 1, sql
        arrays = ", ".join(f"?::{kind}[]" for kind in types)
        converted = _unnest[sql] = sql.replace(values, f"SELECT * FROM unnest({arrays})")
    tx.execute(converted, [list(column) for column in zip(*rows, strict=True)])


def fresh_ids(tx: Tx, rows: Sequence[tuple[str, str, float]], dialect: str = "sqlite") -> set[str]:
    """Record the batch's msg_ids; those not seen before (the rest are redeliveries).
    PostgreSQL: one statement, the columns as arrays (a long VALUES list costs the driver more
    to parse than the server to run); SQLite: multi-row VALUES in chunks."""
    if dialect == "postgresql":
        columns = [list(column) for column in zip(*rows, strict=True)]
        returned = tx.query(
            "INSERT INTO seen_messages (msg_id, gateway, received) "
            "SELECT * FROM unnest(?::text[], ?::text[], ?::float8[]) ON CONFLICT DO NOTHING RETURNING msg_id",
            columns,
        )
        return {row[0] for row in returned}
    fresh: set[str] = set()
    for start in range(0, len(rows), _CHUNK):
        chunk = rows[start : start + _CHUNK]
        values = ", ".join(["(?, ?, ?)"] * len(chunk))
        params = [value for row in chunk for value in row]
        sql = (
            f"INSERT INTO seen_messages (msg_id, gateway, received) VALUES {values} "
            "ON CONFLICT DO NOTHING RETURNING msg_id"
        )
        fresh.update(row[0] for row in tx.query(sql, params))
    return fresh


def write_batch(tx: Tx, batch: Batch, dialect: str) -> int:
    """Everything of ``batch`` in ``tx``; the number of duplicates skipped."""
    items = batch.items
    ids: dict[str, tuple[str, str, float]] = {}
    for item in items:
        if item.msg_id is not None and item.msg_id not in ids:
            ids[item.msg_id] = (item.msg_id, item.gateway, item.now)
    fresh = fresh_ids(tx, list(ids.values()), dialect) if ids else set()
    duplicates = 0
    taken: list[Item] = []
    for item in items:
        if item.msg_id is not None:
            if item.msg_id not in fresh:
                duplicates += 1
                continue
            fresh.discard(item.msg_id)  # a second copy in the same batch is a duplicate too
        taken.append(item)
    last_seen: dict[str, float] = {}
    by_kind: dict[str, list[Item]] = {}
    for item in taken:
        last_seen[item.gateway] = max(item.now, last_seen.get(item.gateway, 0.0))
        by_kind.setdefault(item.kind, []).append(item)
    if last_seen:
        _many(tx, dialect, LAST_SEEN, sorted(last_seen.items()), ("text", "float8"))
    if "status" in by_kind:
        tx.executemany(STATUS, [(i.gateway, int(i.data), i.now, i.now) for i in by_kind["status"]])
    if "alert" in by_kind:
        _alerts(tx, by_kind["alert"])
    if "telemetry" in by_kind:
        _telemetry(tx, by_kind["telemetry"], dialect)
    if "policy_ack" in by_kind:
        acks = by_kind["policy_ack"]
        tx.executemany(
            ACK,
            [
                (i.gateway, i.data.version, i.data.status, i.data.reason, i.data.ts or i.now, i.now)
                for i in acks
                if i.data.version is not None
            ],
        )
    if "rollout" in by_kind:
        tx.executemany(
            ROLLOUT, [(i.data.lamps, i.data.on_version, i.data.policy_version, i.gateway) for i in by_kind["rollout"]]
        )
    if "shadow" in by_kind:
        tx.executemany(
            SHADOW,
            [
                (i.gateway, i.data.candidate, day["day"], _json.encode(day).decode())
                for i in by_kind["shadow"]
                for day in i.data.days
            ],
        )
    if "extra" in by_kind:
        for item in by_kind["extra"]:
            run_extra(tx, item, batch)
    if batch.rejects:
        tx.executemany(
            REJECT,
            [
                (reason, topic_class, count, *batch.reject_detail[(reason, topic_class)])
                for (reason, topic_class), count in batch.rejects.items()
            ],
        )
    return duplicates


def _alerts(tx: Tx, items: list[Item]) -> None:
    changes = []
    rows = []
    for item in items:
        a = item.data
        ts = a.ts if a.ts is not None else item.now
        changes.append((item.msg_id, a.alert_id, item.gateway, ts, a.status, a.responder, a.step, item.raw.decode()))
        rows.append(
            (
                a.alert_id,
                item.gateway,
                a.device,
                a.kind,
                a.priority,
                a.rule,
                a.message,
                a.status,
                a.responder,
                a.step,
                ts,
                ts,
            )
        )
    tx.executemany(ALERT_CHANGE, changes)
    tx.executemany(ALERT, rows)


def _telemetry(tx: Tx, items: list[Item], dialect: str) -> None:
    """Lamps, raw rows, hourly roll-ups and fault episodes; energy from the meter's positive deltas.

    Each lamp's row is locked first, in one order (PostgreSQL ``FOR UPDATE``; SQLite's write
    transaction holds the whole file): two centres on a shared subscription taking reports of the
    same lamp take turns, so a meter delta is never computed twice from the same old reading."""
    wanted: dict[str, set[str]] = {}
    for item in items:
        wanted.setdefault(item.gateway, set()).add(item.lamp)
    pairs = sorted((gateway, lamp) for gateway, lamps in wanted.items() for lamp in lamps)
    _many(tx, dialect, NEW_LAMP, pairs, ("text", "text"))
    # (energy_wh, last_report, faults) per lamp as stored. PostgreSQL: ONE query for the batch,
    # the lamps as two arrays, each row locked (``FOR UPDATE``) in the same order in every
    # process (code points, as Python sorts: the "C" collation); a query per gateway was the
    # bottleneck at a thousand gateways. SQLite: the pairs in chunks (no locks to take).
    state: dict[tuple[str, str], list[Any]] = {}
    if dialect == "postgresql":
        rows = tx.query(
            "SELECT gateway, lamp, energy_wh, last_report, faults FROM lamps WHERE (gateway, lamp) IN "
            '(SELECT * FROM unnest(?::text[], ?::text[])) ORDER BY gateway COLLATE "C", lamp COLLATE "C" FOR UPDATE',
            [[gateway for gateway, _ in pairs], [lamp for _, lamp in pairs]],
        )
    else:
        rows = []
        for start in range(0, len(pairs), _CHUNK):
            chunk = pairs[start : start + _CHUNK]
            marks = ", ".join(["(?, ?)"] * len(chunk))
            rows += tx.query(
                "SELECT gateway, lamp, energy_wh, last_report, faults FROM lamps "
                f"WHERE (gateway, lamp) IN (VALUES {marks})",
                [value for pair in chunk for value in pair],
            )
    for gateway, lamp, energy, last, bits in rows:
        state[(gateway, lamp)] = [energy, last, bits]
    raw = []
    lamps: dict[tuple[str, str], tuple[Any, ...]] = {}
    hours: dict[tuple[str, str, int], list[Any]] = {}
    faults: list[tuple[str, tuple[Any, ...]]] = []  # fault episode changes, in message order
    for item in items:
        t = item.data
        key = (item.gateway, item.lamp)
        ts = t.ts if t.ts is not None else item.now
        raw.append((t.msg_id, item.gateway, item.lamp, ts, item.raw.decode()))
        hour = int(ts // 3600) * 3600
        previous = state.get(key)
        energy = 0.0
        newer = previous is None or previous[1] is None or ts >= previous[1]
        if newer:
            if previous is not None and previous[0] is not None and t.energy_wh >= previous[0]:
                energy = t.energy_wh - previous[0]
            old_faults = 0 if previous is None else int(previous[2] or 0)
            if t.faults and not old_faults:
                faults.append((FAULT_OPEN, (item.gateway, item.lamp, ts, t.faults)))
            elif t.faults and t.faults != old_faults:
                faults.append((FAULT_MORE, (t.faults, item.gateway, item.lamp)))
            elif not t.faults and old_faults:
                faults.append((FAULT_CLEAR, (ts, item.gateway, item.lamp)))
            state[key] = [t.energy_wh, ts, t.faults]
            lamps[key] = (
                item.gateway, item.lamp, t.group, int(t.on), t.level, t.power_w, t.energy_wh, t.burn_hours,
                t.faults, t.policy_version, ts,
            )  # fmt: skip
        agg = hours.get((item.gateway, item.lamp, hour))
        if agg is None:
            hours[(item.gateway, item.lamp, hour)] = [1, energy, t.level, t.power_w, t.faults]
        else:
            agg[0] += 1
            agg[1] += energy
            agg[2] += t.level
            agg[3] = max(agg[3], t.power_w)
            agg[4] |= t.faults
    _many(tx, dialect, TELEMETRY, raw, ("text", "text", "text", "float8", "text"))
    _many(tx, dialect, LAMP, list(lamps.values()), LAMP_TYPES)
    _many(tx, dialect, HOUR, [(*key, *agg) for key, agg in hours.items()], HOUR_TYPES)
    # fault episodes in message order: runs of one statement each go as one executemany
    start = 0
    while start < len(faults):
        end = start
        while end < len(faults) and faults[end][0] == faults[start][0]:
            end += 1
        tx.executemany(faults[start][0], [params for _, params in faults[start:end]])
        start = end
