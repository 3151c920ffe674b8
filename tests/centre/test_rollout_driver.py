"""The rollout driver on a real database (SQLite and PostgreSQL): its input is the tables the ingest fills
(policy_acks, gateways), so these tests write those rows as the ingest would and check what is published."""

from __future__ import annotations

import asyncio
import base64

import pytest

from centre.db import Database, open_database
from centre.rollout import make_plan
from centre.rollout_driver import RolloutError, abort_rollout, create_rollout, rollout_status, tick
from edge_agent.policy.bundle_sign import build_bundle, sign_bundle
from edge_agent.policy.keys import generate_private_key, key_id

T0 = 1_780_000_000.0


def signed(version: int = 7, gateways: tuple[str, ...] = ("*",)) -> bytes:
    key = generate_private_key()
    bundle = build_bundle(
        b"x = 1\n",
        kind="policy",
        district="naxi",
        gateways=list(gateways),
        version=version,
        issued_at=int(T0),
        not_before=int(T0),
        expires=int(T0) + 86400 * 30,
        key_id=key_id(key.public_key()),
        force=True,
    )
    return sign_bundle(bundle, key)


class Broker:
    """What the driver published, in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bool]] = []

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self.sent.append((topic, payload, retain))

    def gateways(self) -> list[str]:
        return [topic.split("/")[2] for topic, _, _ in self.sent]


def gateway_reports(
    db: Database,
    gw: str,
    version: int,
    *,
    accept: bool = True,
    lamps: int = 3,
    on: int = 3,
    ts: float = T0,
    received: float | None = None,
) -> None:
    """What the ingest writes for a gateway's policy/ack (``ts``: the gateway's stamp, ``received``: the
    centre's clock when it took it; None as in rows from before migration 003) and its retained rollout
    summary. A rejected ack carries the gateway's ACTIVE version (here 9: it runs a newer one), as
    edge_agent/agent/policy_install.py sends it."""
    with db.transaction() as tx:
        tx.execute(
            "INSERT INTO policy_acks (gateway, version, status, reason, ts, received) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (gateway, version, status) DO UPDATE SET reason = excluded.reason, ts = excluded.ts",
            (
                gw,
                version if accept else 9,
                "accepted" if accept else "rejected",
                None if accept else "rollback",
                ts,
                received,
            ),
        )
        if accept:
            tx.execute(
                "INSERT INTO gateways (gateway, online, policy_version, lamps, lamps_on_version) VALUES (?, 1, ?, ?, ?)"
                " ON CONFLICT (gateway) DO UPDATE SET policy_version = excluded.policy_version,"
                " lamps = excluded.lamps, lamps_on_version = excluded.lamps_on_version",
                (gw, version, lamps, on),
            )


def states(db: Database, rollout_id: str) -> dict[str, str]:
    status = rollout_status(db, rollout_id)
    assert status is not None
    return {gw: state for gw, _, state, _ in status.targets}


GATEWAYS = [f"gw{i:02d}" for i in range(10)]


def test_canary_then_waves_to_success_and_each_bundle_published_retained_once(database_url: str) -> None:
    broker = Broker()
    envelope = signed()
    with open_database(database_url) as db:
        plan = make_plan(canary=2, waves="50%,100%", abort_if="rejected > 0", window=None, timeout="5m")
        rid = create_rollout(db, envelope, GATEWAYS, plan, T0)
        status = rollout_status(db, rid)
        assert status is not None and status.waves == 3
        waves = {w: sorted(gw for gw, wave, _, _ in status.targets if wave == w) for w in range(3)}
        assert [len(waves[w]) for w in range(3)] == [2, 4, 4]

        asyncio.run(tick(db, broker.publish, T0))
        assert sorted(broker.gateways()) == waves[0]  # only the canary
        assert all(retain and payload == envelope for _, payload, retain in broker.sent)
        assert broker.sent[0][0] == f"district/v1/{waves[0][0]}/policy"
        asyncio.run(tick(db, broker.publish, T0 + 1))
        assert len(broker.sent) == 2  # in progress: not published again

        gateway_reports(db, waves[0][0], 7)
        gateway_reports(db, waves[0][1], 7, on=2)  # acked, but one lamp has not confirmed yet
        asyncio.run(tick(db, broker.publish, T0 + 2))
        assert states(db, rid)[waves[0][0]] == "SUCCEEDED" and states(db, rid)[waves[0][1]] == "IN_PROGRESS"
        assert len(broker.sent) == 2  # the next wave waits for the whole canary
        gateway_reports(db, waves[0][1], 7)
        asyncio.run(tick(db, broker.publish, T0 + 3))
        assert sorted(broker.gateways()[2:]) == waves[1]
        for gw in waves[1]:
            gateway_reports(db, gw, 7)
        asyncio.run(tick(db, broker.publish, T0 + 4))
        assert sorted(broker.gateways()[6:]) == waves[2]
        for gw in waves[2]:
            gateway_reports(db, gw, 7)
        asyncio.run(tick(db, broker.publish, T0 + 5))
        status = rollout_status(db, rid)
        assert status is not None and status.state == "succeeded" and status.counts == {"SUCCEEDED": 10}
        assert sorted(broker.gateways()) == GATEWAYS  # each exactly once
        stored = db.query("SELECT bundle FROM policy_versions WHERE version = 7")
        assert base64.b64decode(stored[0][0]) == envelope


def test_a_rejecting_canary_aborts_and_the_rest_never_get_the_bundle(database_url: str) -> None:
    broker = Broker()
    with open_database(database_url) as db:
        plan = make_plan(canary=2, waves="50%", abort_if="rejected > 0 or timed_out > 10%", window=None, timeout="5m")
        rid = create_rollout(db, signed(), GATEWAYS, plan, T0)
        asyncio.run(tick(db, broker.publish, T0))
        canary = broker.gateways()
        gateway_reports(db, canary[0], 7)
        gateway_reports(db, canary[1], 7, accept=False, ts=T0 - 10)  # an old rejection: not this rollout's
        asyncio.run(tick(db, broker.publish, T0 + 1))
        assert rollout_status(db, rid).counts.get("REJECTED") is None  # type: ignore[union-attr]
        gateway_reports(db, canary[1], 7, accept=False, ts=T0 + 1)
        asyncio.run(tick(db, broker.publish, T0 + 1))
        asyncio.run(tick(db, broker.publish, T0 + 2))
        status = rollout_status(db, rid)
        assert status is not None and status.state == "aborted"
        assert status.reason is not None and "rejected > 0" in status.reason and "rejected=1" in status.reason
        assert status.counts == {"SUCCEEDED": 1, "REJECTED": 1, "CANCELED": 8}
        assert sorted(broker.gateways()) == sorted(canary)  # nobody else got it
        with pytest.raises(RolloutError, match="already ended"):
            abort_rollout(db, rid, T0 + 3)


def test_timeouts_count_from_the_stored_start_so_a_restart_resumes(database_url: str) -> None:
    broker = Broker()
    with open_database(database_url) as db:
        plan = make_plan(canary=1, waves="100%", abort_if="timed_out > 50% after 2", window=None, timeout="60s")
        rid = create_rollout(db, signed(), GATEWAYS[:3], plan, T0)
        asyncio.run(tick(db, broker.publish, T0))
        (canary,) = broker.gateways()
    # "restart": a new connection, a new driver pass; nothing is republished, the 60 s run from T0
    with open_database(database_url) as db:
        asyncio.run(tick(db, broker.publish, T0 + 59))
        assert len(broker.sent) == 1 and states(db, rid)[canary] == "IN_PROGRESS"
        asyncio.run(tick(db, broker.publish, T0 + 60))
        assert states(db, rid)[canary] == "TIMED_OUT"
        # 1 finished, fewer than `after 2`: the rule holds off and wave 1 goes out
        assert len(broker.sent) == 3
        status = rollout_status(db, rid)
        assert status is not None and status.state == "running" and status.wave == 1
        detail = next(d for gw, _, _, d in status.targets if gw == canary)
        assert detail is not None and "no ack after 60 s" in detail
        rest = broker.gateways()[1:]
        gateway_reports(db, rest[0], 7)
        asyncio.run(tick(db, broker.publish, T0 + 200))  # the other one times out too: 2 of 3 failed
        status = rollout_status(db, rid)
        assert status is not None and status.state == "aborted" and "timed_out > 50% after 2" in (status.reason or "")


def test_window_holds_a_wave_until_it_opens(database_url: str) -> None:
    import datetime as dt
    from zoneinfo import ZoneInfo

    noon = dt.datetime(2026, 12, 5, 12, 0, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()
    night = dt.datetime(2026, 12, 5, 22, 1, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()
    broker = Broker()
    with open_database(database_url) as db:
        plan = make_plan(canary=1, waves="100%", abort_if="", window="22:00-05:00", timeout="1h")
        rid = create_rollout(db, signed(), GATEWAYS[:2], plan, noon)
        asyncio.run(tick(db, broker.publish, noon))
        status = rollout_status(db, rid)
        assert status is not None and status.state == "waiting_window" and broker.sent == []
        asyncio.run(tick(db, broker.publish, night))
        assert len(broker.sent) == 1
        assert rollout_status(db, rid).state == "running"  # type: ignore[union-attr]


def test_operator_abort_and_bad_input(database_url: str) -> None:
    broker = Broker()
    with open_database(database_url) as db:
        plan = make_plan(canary=1, waves="100%", abort_if="", window=None, timeout="1h")
        with pytest.raises(RolloutError, match="not a signed policy bundle"):
            create_rollout(db, b'{"bundle": 1}', GATEWAYS, plan, T0)
        with pytest.raises(RolloutError, match="no gateways"):
            create_rollout(db, signed(), [], plan, T0)
        with pytest.raises(RolloutError, match="for district 'naxi', this centre's is 'lijiang'"):
            create_rollout(db, signed(), GATEWAYS[:3], plan, T0, district="lijiang")
        with pytest.raises(RolloutError, match="does not name 1 of the gateways: gw02"):
            create_rollout(db, signed(3, ("gw00", "gw01")), GATEWAYS[:3], plan, T0)
        rid = create_rollout(db, signed(), GATEWAYS[:3], plan, T0)
        with pytest.raises(RolloutError, match="still active"):
            create_rollout(db, signed(8), GATEWAYS[:3], plan, T0)
        asyncio.run(tick(db, broker.publish, T0))
        abort_rollout(db, rid, T0 + 1)
        asyncio.run(tick(db, broker.publish, T0 + 2))
        status = rollout_status(db, rid)
        assert status is not None and status.state == "aborted" and status.counts == {"CANCELED": 3}
        assert len(broker.sent) == 1
        with pytest.raises(RolloutError, match="other bytes"):
            create_rollout(db, signed(), GATEWAYS[:3], plan, T0)  # version 7 again, another signature


def test_a_failed_publish_leaves_the_gateway_queued_for_the_next_pass(database_url: str) -> None:
    from edge_agent.errors import TransportError

    sent: list[str] = []
    down = {"gw01"}

    async def flaky(topic: str, payload: bytes, *, retain: bool = False) -> None:
        gateway = topic.split("/")[2]
        if gateway in down:
            raise TransportError("centre link is down")
        sent.append(gateway)

    with open_database(database_url) as db:
        plan = make_plan(canary=0, waves="100%", abort_if="", window=None, timeout="1h")
        rid = create_rollout(db, signed(), GATEWAYS[:3], plan, T0)
        with pytest.raises(TransportError):
            asyncio.run(tick(db, flaky, T0))
        assert sorted(sent) == ["gw00", "gw02"]
        assert states(db, rid) == {"gw00": "IN_PROGRESS", "gw01": "QUEUED", "gw02": "IN_PROGRESS"}
        down.clear()
        asyncio.run(tick(db, flaky, T0 + 1))
        assert sorted(sent) == ["gw00", "gw01", "gw02"]  # only the one that failed, once more
        assert states(db, rid)["gw01"] == "IN_PROGRESS"


def test_a_fresh_ack_beside_the_old_summary_is_not_yet_success(database_url: str) -> None:
    """The ingest sets policy_version from the ack while lamps_on_version still counts the old version's
    lamps: the driver waits until the ack is a second old, by when the gateway's new summary has come."""
    broker = Broker()
    with open_database(database_url) as db:
        db.execute("INSERT INTO gateways (gateway, policy_version, lamps, lamps_on_version) VALUES ('gw00', 6, 3, 3)")
        plan = make_plan(canary=0, waves="100%", abort_if="", window=None, timeout="1h")
        rid = create_rollout(db, signed(), ["gw00"], plan, T0)
        asyncio.run(tick(db, broker.publish, T0))
        with db.transaction() as tx:  # the ack, as the ingest writes it: the row now says 7, with 3/3 lamps
            tx.execute(
                "INSERT INTO policy_acks (gateway, version, status, reason, ts)"
                " VALUES ('gw00', 7, 'accepted', NULL, ?)",
                (T0 + 1,),
            )
            tx.execute("UPDATE gateways SET policy_version = 7 WHERE gateway = 'gw00'")
        asyncio.run(tick(db, broker.publish, T0 + 1.2))
        assert states(db, rid) == {"gw00": "IN_PROGRESS"}
        db.execute("UPDATE gateways SET lamps_on_version = 0 WHERE gateway = 'gw00'")  # the new summary
        asyncio.run(tick(db, broker.publish, T0 + 3))
        assert states(db, rid) == {"gw00": "IN_PROGRESS"}
        db.execute("UPDATE gateways SET lamps_on_version = 3 WHERE gateway = 'gw00'")
        asyncio.run(tick(db, broker.publish, T0 + 4))
        assert states(db, rid) == {"gw00": "SUCCEEDED"}


def test_acks_count_on_the_centres_clock_when_a_gateways_clock_is_wrong(database_url: str) -> None:
    """A village gateway whose clock is nine days behind (no NTP behind its router) refuses the bundle:
    its ack is stamped long before the rollout started, but the centre took it after, so it is REJECTED
    at once, not left to time out."""
    broker = Broker()
    behind = 9 * 86400.0
    with open_database(database_url) as db:
        plan = make_plan(canary=0, waves="100%", abort_if="rejected > 0", window=None, timeout="60s")
        rid = create_rollout(db, signed(), ["gw-late", "gw-ok"], plan, T0)
        asyncio.run(tick(db, broker.publish, T0))
        gateway_reports(db, "gw-late", 7, accept=False, ts=T0 - behind, received=T0 + 2)
        gateway_reports(db, "gw-ok", 7, ts=T0 - behind, received=T0 + 2)
        asyncio.run(tick(db, broker.publish, T0 + 2.5))  # the accepted ack settles 1 s on the centre's clock
        assert states(db, rid) == {"gw-late": "REJECTED", "gw-ok": "IN_PROGRESS"}
        asyncio.run(tick(db, broker.publish, T0 + 3.5))
        assert states(db, rid) == {"gw-late": "REJECTED", "gw-ok": "SUCCEEDED"}


def test_a_rollout_no_gateway_took_ends_incomplete_not_succeeded(database_url: str) -> None:
    """The abort rule only counts rejections, every gateway times out: every wave ran, but the rollout
    did not succeed, and says how many did not take it."""
    broker = Broker()
    with open_database(database_url) as db:
        plan = make_plan(canary=0, waves="100%", abort_if="rejected > 0", window=None, timeout="60s")
        rid = create_rollout(db, signed(), ["gw-a", "gw-b", "gw-c"], plan, T0)
        asyncio.run(tick(db, broker.publish, T0))
        gateway_reports(db, "gw-a", 7, received=T0 + 1)
        asyncio.run(tick(db, broker.publish, T0 + 61))
        status = rollout_status(db, rid)
        assert status is not None and status.state == "incomplete"
        assert status.counts == {"SUCCEEDED": 1, "TIMED_OUT": 2}
        assert "timed_out=2" in (status.reason or "")
