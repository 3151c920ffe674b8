"""Issue 21, end to end in one process: a real gateway ``Agent`` on the in-process bus ships its
field history and its health north on its own (history_north started by the agent, the
outbox drained by the north link), an SOS's alert, incident and notifications included; what
the platform side of the bus receives, stored by the centre's handlers, equals the gateway's
own tables."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from centre.db import open_database
from centre.history import HANDLERS
from devtools.gateway_config import SOS_RULE
from edge_agent.agent.history_north import COLUMNS, SHIP_S
from edge_agent.clock import ManualClock
from tests.agent.harness import T0, eventually, in_process_village, running, write_gateway

GW = "naxi-h1"


def rows_of(db: Any, table: str, where: str = "", params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    cols = ", ".join(COLUMNS[table])
    return sorted(db.execute(f"SELECT {cols} FROM {table} {where}", params).fetchall(), key=repr)


async def test_a_running_gateway_ships_its_history_and_health(tmp_path: Path) -> None:
    village = in_process_village()
    config = write_gateway(tmp_path, GW, village.port, SOS_RULE)
    clock = ManualClock(T0)
    async with village.observing(f"district/v1/{GW}") as obs, running(config, clock, links=village.links) as agent:
        await eventually(lambda: obs.on("health"), what="the health report at connect")
        await obs.publish("wearable/W1/event", {"event": "sos", "seq": 1})
        await eventually(lambda: obs.on("responder/doc1/alert"), what="doc1 paged")
        await obs.publish("responder/doc1/ack", {"alert_id": obs.on("responder/doc1/alert")[0]["alert_id"]})
        await eventually(
            lambda: agent.store.db.execute("SELECT 1 FROM alert_log WHERE status = 'acknowledged'").fetchone(),
            what="the acknowledgement logged",
        )
        await clock.advance(SHIP_S)

        def shipped(table: str) -> list[dict[str, Any]]:
            return [b for b in obs.on("history") if b["table"] == table]

        await eventually(
            lambda: any(r[3] == "acknowledged" for b in shipped("alert_log") for r in b["rows"]),
            what="the acknowledgement shipped",
        )
        await eventually(lambda: shipped("event_log") and shipped("notifications"), what="incident and ledger shipped")
        await clock.advance(SHIP_S)
        await eventually(lambda: agent.store.outbox.backlog().get("north") is None, what="the north outbox drained")
    history = obs.on("history")
    health = obs.on("health")
    assert health[0]["gateway"] == GW and health[0]["uplink_outages"] == 0 and health[0]["policy_version"] >= 0
    assert len({b["msg_id"] for b in history}) == len(history)  # each batch once
    with open_database(f"sqlite:///{tmp_path / 'centre.db'}") as db:
        for body in history:
            with db.transaction() as tx:
                HANDLERS["history"](tx, GW, body, T0)
        with db.transaction() as tx:
            HANDLERS["health"](tx, GW, health[-1], T0)
        assert db.query("SELECT outbox_depth, outages FROM gateways") == [(health[-1]["outbox"], 0)]
        store = sqlite3.connect(config.data_dir / "gateway.sqlite3")
        try:
            for table in COLUMNS:
                mine = rows_of(store, table)
                if table in ("alert_log", "event_log", "notifications"):
                    assert mine, f"the SOS left no {table} rows"
                centre = sorted(
                    db.query(f"SELECT {', '.join(COLUMNS[table])} FROM history_{table} WHERE gateway = ?", (GW,)),
                    key=repr,
                )
                assert centre == mine, table
        finally:
            store.close()
