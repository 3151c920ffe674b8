"""What the console reads and draws, on SQLite and PostgreSQL: alerts with who was reached how,
open faults, energy per day and group (the SVG's bars), rollouts in progress."""

from __future__ import annotations

import re

from centre.console.pages import render_live
from centre.console.readmodel import read_snapshot
from centre.db import open_database
from tests.centre.console_helpers import insert_alert

DAY = 86400
NOW = 20_000 * DAY + 12 * 3600  # noon, UTC


def test_the_snapshot_and_its_drawing(database_url: str) -> None:
    with open_database(database_url) as db:
        with db.transaction() as tx:
            tx.executemany(
                "INSERT INTO gateways (gateway, online, last_seen, lamps, lamps_on_version) VALUES (?, ?, ?, 2, 1)",
                [("gw-a", 1, NOW - 5), ("gw-b", 0, NOW - 7200)],
            )
            tx.executemany(
                "INSERT INTO lamps (gateway, lamp, lamp_group) VALUES (?, ?, ?)",
                [("gw-a", "L1", "main-street"), ("gw-a", "L2", ""), ("gw-b", "L1", "")],
            )
            today, yesterday = 20_000 * DAY, 19_999 * DAY
            tx.executemany(
                "INSERT INTO lamp_hours (gateway, lamp, hour, reports, energy_wh, level_sum, power_w_max, faults) "
                "VALUES (?, ?, ?, 1, ?, 0, 0, 0)",
                [
                    ("gw-a", "L1", today + 3600, 500.0),
                    ("gw-a", "L1", today + 7200, 250.0),  # main-street today: 0.75 kWh
                    ("gw-a", "L2", yesterday + 3600, 1200.0),  # group '': named gw-a, yesterday 1.2 kWh
                    ("gw-b", "L1", today, 2000.0),  # gw-b today 2 kWh
                    ("gw-b", "L1", today - 20 * DAY, 9999.0),  # too old for the plot
                ],
            )
            tx.executemany(
                "INSERT INTO lamp_faults (gateway, lamp, since, faults, cleared) VALUES (?, ?, ?, ?, ?)",
                [("gw-a", "L1", NOW - 600, 4, None), ("gw-a", "L2", NOW - 900, 1, NOW - 300)],
            )
            tx.execute(
                "INSERT INTO rollouts (rollout_id, version, state, plan, wave, created, updated) "
                "VALUES ('r1', 5, 'running', '{}', 1, ?, ?)",
                (NOW - 100, NOW),
            )
            tx.execute(
                "INSERT INTO rollouts (rollout_id, version, state, plan, wave, created, updated) "
                "VALUES ('r0', 4, 'succeeded', '{}', 2, ?, ?)",
                (NOW - 1000, NOW),
            )
            tx.execute(  # ended two days ago: no longer shown
                "INSERT INTO rollouts (rollout_id, version, state, plan, wave, created, updated) "
                "VALUES ('r-old', 3, 'aborted', '{}', 0, ?, ?)",
                (NOW - 3 * DAY, NOW - 2 * DAY),
            )
            tx.executemany(
                "INSERT INTO rollout_targets (rollout_id, gateway, wave, state) VALUES ('r1', ?, ?, ?)",
                [("gw-a", 0, "SUCCEEDED"), ("gw-b", 1, "IN_PROGRESS"), ("gw-c", 1, "QUEUED"), ("gw-d", 1, "REJECTED")],
            )
        body = {"responder": "doc2", "step": 1}
        ledger = [(0, "doc1", "app", "delivered"), (0, "doc1", "sms", "delivered"), (0, "doc1", "ring", "failed")]
        ledger += [(1, "doc2", "app", "delivered"), (1, "doc2", "sms", "sent")]
        insert_alert(db, "al-1", "gw-b", status="escalated", raised=NOW - 300, body=body, reached=ledger)
        insert_alert(db, "al-2", "gw-b", status="resolved", raised=NOW - 300, body={})

        snap = read_snapshot(db, NOW)

    assert [g["gateway"] for g in snap["gateways"]] == ["gw-a", "gw-b"]
    [alert] = snap["alerts"]  # the resolved one is not open
    assert (alert["alert_id"], alert["reached"], alert["channels"], alert["ackable"]) == (
        "al-1",
        ["doc1", "doc2"],  # in the order they were offered it
        ["app delivered", "sms sent"],  # the latest step's channels, how far each got
        True,
    )
    assert [(f["lamp"], f["faults"]) for f in snap["faults"]] == [("L1", 4)]
    rollout, ended = snap["rollouts"]  # the running one first, then what ended in the last day
    assert (rollout["rollout_id"], rollout["total"], rollout["done"]) == ("r1", 4, 2)
    assert (ended["rollout_id"], ended["state"]) == ("r0", "succeeded")

    html = render_live(snap, "viewer", "", NOW)
    bars = {
        (m.group(1), float(m.group(2)))
        for m in re.finditer(r'<rect x="([\d.]+)"[^>]*data-group="[^"]*" data-kwh="([\d.]+)"', html)
    }
    kwh = sorted((g, float(k)) for g, k in re.findall(r'data-group="([^"]*)" data-kwh="([\d.]+)"', html))
    assert kwh == [("gw-a", 1.2), ("gw-b", 2.0), ("main-street", 0.75)]
    assert len({x for x, _ in bars}) == 2  # two days have bars: yesterday and today
    assert "gw-a: 1.20 kWh" in html and "gw-b: 2.00 kWh" in html and "main-street: 0.75 kWh" in html
    assert '<progress max="4" value="2">' in html
    assert "0x04" in html and "10 min" in html  # the open fault, its age
