"""`centre run` on a real Mosquitto: ingest through the broker on both databases, a real gateway's
SOS in the alerts table, kill -9 between COMMIT and acknowledgement (nothing lost, nothing
doubled), two processes on a shared subscription, and TLS."""

from __future__ import annotations

import asyncio
import getpass
import json
import ssl
import sys
import time
import types
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import trustme
from typer.testing import CliRunner

from centre.cli import app
from centre.config import load_centre_config
from centre.db import open_database
from centre.service import subscriptions
from devtools.mosquitto import Listener, MosquittoProcess
from edge_agent.clock import ManualClock
from tests.agent.harness import SOS_RULE, running, write_gateway
from tests.centre.centre_harness import CentreProcess, centre_in_process, eventually, publish_all, write_centre
from tests.conftest import BrokerInfo

T0 = 1_767_225_600.0  # the gateway's ManualClock
RECENT = time.time() // 3600 * 3600 - 7200  # telemetry times: within [retention] raw_days


def telemetry(gateway: str, n: int, *, lamps: int = 10) -> list[tuple[str, bytes]]:
    """``n`` reports over ``lamps`` lamps; lamp k's meter grows by 1 Wh per report."""
    out = []
    for i in range(n):
        lamp, count = f"L{i % lamps}", i // lamps
        body = {
            "v": 1, "ts": RECENT + i, "on": True, "level": 50, "power_w": 30, "energy_wh": 100.0 + count,
            "msg_id": f"{gateway}-{i}", "seq": count, "gateway": gateway,
        }  # fmt: skip
        out.append((f"district/v1/{gateway}/telemetry/lamp/{lamp}", json.dumps(body).encode()))
    return out


def counts(url: str, gateway: str) -> tuple[int, int, float]:
    """(raw rows, reports rolled up, energy rolled up) of ``gateway``."""
    with open_database(url) as db:
        raw = db.query("SELECT COUNT(*) FROM lamp_telemetry WHERE gateway = ?", (gateway,))[0][0]
        reports, energy = db.query(
            "SELECT COALESCE(SUM(reports), 0), COALESCE(SUM(energy_wh), 0) FROM lamp_hours WHERE gateway = ?",
            (gateway,),
        )[0]
    return int(raw), int(reports), float(energy)


async def test_messages_through_the_broker_land_once_and_bad_ones_are_counted(
    tmp_path: Path, mqtt_broker: BrokerInfo, database_url: str, unique_id: str
) -> None:
    path = write_centre(tmp_path, mqtt_broker.port, database_url, centre_id=f"c-{unique_id}")
    gw = unique_id
    async with centre_in_process(path) as service:
        assert service.db is not None
        db = service.db
        reports = telemetry(gw, 4, lamps=1)
        ack = {"v": 1, "gateway": gw, "version": 2, "status": "accepted"}
        await publish_all(
            mqtt_broker.port,
            [
                (f"district/v1/{gw}/status", b"online"),
                *reports,
                reports[1],  # the outbox sends it again after a reconnect
                (f"district/v1/{gw}/telemetry/lamp/L0", b"\xff not json"),
                (f"district/v1/{gw}/policy/ack", json.dumps(ack).encode()),
                (f"district/v1/{gw}/rollout", b'{"v":1,"policy_version":2,"lamps":1,"on_version":1}'),
            ],
        )
        await eventually(
            lambda: db.query("SELECT lamps_on_version FROM gateways WHERE gateway = ?", (gw,)) == [(1,)],
            what="rollout summary",
        )
        assert db.query("SELECT online, policy_version FROM gateways WHERE gateway = ?", (gw,)) == [(1, 2)]
        assert counts(database_url, gw) == (4, 4, 3.0)  # meter 100 -> 103
        assert db.query("SELECT count FROM rejects WHERE reason = 'bad_json'") == [(1,)]
        assert service.ingest is not None and service.ingest.stats.duplicates == 1


async def test_a_failed_commit_is_delivered_again_and_nothing_after_it_overtakes_it(
    tmp_path: Path, mqtt_broker: BrokerInfo, database_url: str, unique_id: str
) -> None:
    path = write_centre(tmp_path, mqtt_broker.port, database_url, centre_id=f"c-{unique_id}")
    gw = unique_id
    async with centre_in_process(path) as service:
        assert service.ingest is not None and service.link is not None and service.db is not None
        flush, calls = service.ingest.flush, []

        def failing_once(batch: Any) -> int:
            calls.append(len(batch.items))
            if len(calls) == 1:
                raise RuntimeError("the database went away")
            return flush(batch)

        service.ingest.flush = failing_once  # type: ignore[method-assign]
        stream = [(f"district/v1/{gw}/status", b"online"), *telemetry(gw, 50), (f"district/v1/{gw}/status", b"offline")]
        await publish_all(mqtt_broker.port, stream)
        await eventually(lambda: counts(database_url, gw)[0] == 50, what="every report after the failure")
        await eventually(
            lambda: service.db.query("SELECT online, outages FROM gateways WHERE gateway = ?", (gw,)) == [(0, 1)],
            what="the last status wins",
        )
        assert service.commit_failures == 1 and service.link.connects >= 2
    assert counts(database_url, gw) == (50, 50, 40.0)


async def test_a_real_gateways_sos_lands_in_the_alerts_table(
    tmp_path: Path, mqtt_broker: BrokerInfo, unique_id: str
) -> None:
    url = f"sqlite:///{tmp_path / 'centre.db'}"
    path = write_centre(tmp_path / "centre", mqtt_broker.port, url, centre_id=f"c-{unique_id}")
    gateway = write_gateway(tmp_path / "gw", unique_id, mqtt_broker.port, SOS_RULE)
    clock = ManualClock(T0)
    async with centre_in_process(path) as service, running(gateway, clock):
        assert service.db is not None
        db = service.db
        await publish_all(mqtt_broker.port, [(f"district/v1/{unique_id}/wearable/W1/event", b'{"v":1,"event":"sos"}')])
        await eventually(lambda: db.query("SELECT status FROM alerts WHERE gateway = ?", (unique_id,)), what="alert")
        await clock.advance(120)  # doc1 did not answer: escalated to doc2
        await eventually(
            lambda: (
                db.query("SELECT status, responder FROM alerts WHERE gateway = ?", (unique_id,))
                == [("escalated", "doc2")]
            ),
            what="escalation",
        )
        changes = db.query("SELECT status, ts FROM alert_changes WHERE gateway = ? ORDER BY ts", (unique_id,))
        assert changes == [("notified", T0), ("escalated", T0 + 120)]
        row = db.query("SELECT device, rule, priority, raised FROM alerts WHERE gateway = ?", (unique_id,))
        assert row == [("W1", "sos", 1, T0)]
        await eventually(
            lambda: db.query("SELECT online FROM gateways WHERE gateway = ?", (unique_id,)) == [(1,)], what="status"
        )
        # the gateway's own lamp telemetry (its outbox adds msg_id, seq, gateway) is taken too
        state = b'{"v":1,"on":true,"level":80,"power_w":40.5,"energy_wh":12.5,"faults":2}'
        await publish_all(mqtt_broker.port, [(f"district/v1/{unique_id}/lamp/L2/state", state)])
        await eventually(
            lambda: (
                db.query("SELECT level, power_w, energy_wh, faults FROM lamps WHERE gateway = ?", (unique_id,))
                == [(80.0, 40.5, 12.5, 2)]
            ),
            what="lamp telemetry",
        )
        assert db.query("SELECT faults, cleared FROM lamp_faults WHERE gateway = ?", (unique_id,)) == [(2, None)]
        assert db.query("SELECT COUNT(*) FROM rejects WHERE last_detail LIKE ?", (f"%{unique_id}%",)) == [(0,)]


async def test_kill_9_between_commit_and_ack_loses_nothing_and_doubles_nothing(
    tmp_path: Path, mqtt_broker: BrokerInfo, database_url: str, unique_id: str
) -> None:
    path = write_centre(tmp_path, mqtt_broker.port, database_url, centre_id=f"c-{unique_id}")
    centre = CentreProcess(path, "centre")
    n = 600
    try:
        centre.start()  # the centre's persistent session exists: the broker keeps what comes next for it
        assert centre.stop() == 0, "SIGTERM stops the centre cleanly"
        assert "centre stopped" in centre.text()
        await publish_all(mqtt_broker.port, telemetry(unique_id, n))
        # the broker floods the restarted centre; it dies right after its first COMMIT returned,
        # before that batch's acknowledgements went out, with more messages delivered, not committed
        centre.env["CENTRE_TEST_KILL_AFTER_COMMITS"] = "1"
        centre.start()
        assert centre.wait_killed() == -9
        committed_before = counts(database_url, unique_id)[0]
        assert 0 < committed_before < n, committed_before
        centre.env.pop("CENTRE_TEST_KILL_AFTER_COMMITS")
        centre.start()
        await eventually(lambda: counts(database_url, unique_id)[0] >= n, what="every report after the restart")
        await eventually(lambda: centre.committed(since_start=3) >= n - committed_before, what="the restart's log")
    finally:
        centre.stop()
    # each lamp reported n/10 times with its meter +1 each time: n/10 - 1 Wh per lamp
    assert counts(database_url, unique_id) == (n, n, float(n - 10))
    # the broker delivered again what was committed but not acknowledged, and it was skipped
    assert centre.duplicates(since_start=3) > 0


@pytest.mark.broker
async def test_two_centres_on_a_shared_subscription_split_the_stream(
    tmp_path: Path, pg_url: str, unique_id: str
) -> None:
    n = 800
    with MosquittoProcess() as mosq:  # a broker of its own: every message counted is this test's
        centres = [
            CentreProcess(
                write_centre(
                    tmp_path / name, mosq.port, pg_url, centre_id=f"{name}-{unique_id}", shared_group="centre"
                ),
                name,
            )
            for name in ("a", "b")
        ]
        # retained before the centres start: a broker sends no retained message to a shared subscription
        await publish_all(mosq.port, [(f"district/v1/{unique_id}/status", b"online")], retain=True)
        try:
            for centre in centres:
                centre.start()
            await publish_all(mosq.port, telemetry(unique_id, n, lamps=40))
            await eventually(lambda: counts(pg_url, unique_id)[0] >= n, what="every report")
            await eventually(lambda: sum(c.committed() for c in centres) >= n, what="both logs")
        finally:
            for centre in centres:
                centre.stop()
    assert counts(pg_url, unique_id) == (n, n, float(n - 40))
    a, b = (c.committed() for c in centres)
    assert a > 0 and b > 0 and a + b == n + 2, (a, b)  # each took the retained status too
    with open_database(pg_url) as db:
        assert db.query("SELECT online, outages FROM gateways WHERE gateway = ?", (unique_id,)) == [(1, 0)]


@pytest.mark.broker
async def test_tls_to_the_broker(tmp_path: Path, unique_id: str) -> None:
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    ca_file, cert, key = tmp_path / "ca.pem", tmp_path / "server.pem", tmp_path / "server.key"
    ca.cert_pem.write_to_path(str(ca_file))
    server.cert_chain_pems[0].write_to_path(str(cert))
    server.private_key_pem.write_to_path(str(key))
    listener = Listener.tls(ca_file, cert, key, require_certificate=False, allow_anonymous=True)
    url = f"sqlite:///{tmp_path / 'centre.db'}"
    with MosquittoProcess(listeners=[listener], user=getpass.getuser()) as mosq:  # it reads the key in tmp_path
        path = write_centre(tmp_path / "c", mosq.port, url, centre_id=f"c-{unique_id}", scheme="mqtts", ca=ca_file)
        context = ssl.create_default_context(cafile=str(ca_file))
        tls: dict[str, Any] = {"tls_context": context}
        async with centre_in_process(path) as service:
            assert service.db is not None and service.link is not None
            assert service.link.settings.tls is not None
            await publish_all(mosq.port, telemetry(unique_id, 3, lamps=1), **tls)
            await eventually(lambda: counts(url, unique_id)[0] == 3, what="reports over TLS")


def test_run_with_a_bad_file_names_the_problem_and_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "centre.toml"
    bad.write_text('[broker]\nurl = "http://nope"\n[database]\nurl = "mysql://x"\n')
    result = CliRunner().invoke(app, ["run", "-c", str(bad)])
    assert result.exit_code == 2
    assert "broker.url" in result.output and "database.url" in result.output


def test_subscriptions_alone_and_in_a_shared_group(tmp_path: Path) -> None:
    alone = load_centre_config(write_centre(tmp_path / "a", 1, "sqlite:///x.db", centre_id="a"))
    assert ("district/v1/+/telemetry/lamp/+", 1) in subscriptions(alone)
    assert ("district/v1/+/event/#", 1) in subscriptions(alone)
    grouped = load_centre_config(write_centre(tmp_path / "b", 1, "sqlite:///x.db", centre_id="b", shared_group="g"))
    filters = {topic for topic, _ in subscriptions(grouped)}
    assert "$share/g/district/v1/+/telemetry/lamp/+" in filters and "$share/g/district/v1/+/alert" in filters
    assert {"district/v1/+/status", "district/v1/+/rollout"} <= filters
    assert not {f for f in filters if f.startswith("$share/") and f.endswith(("/status", "/rollout"))}


async def test_the_console_and_the_rollout_driver_run_with_the_db_and_publish(
    tmp_path: Path, mqtt_broker: BrokerInfo, unique_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The contract the other parts code against (stand-ins for centre.console / centre.rollout_driver)."""
    seen: dict[str, Any] = {}

    async def serve_console(config: Any, db: Any, publish: Any) -> None:
        seen["console"] = db.query("SELECT COUNT(*) FROM gateways")[0][0]
        await asyncio.Event().wait()

    async def drive_rollouts(config: Any, db: Any, publish: Any, clock: Any) -> None:
        await publish(f"district/v1/{unique_id}/policy", b"bundle", retain=True)
        seen["driver"] = clock()
        await asyncio.Event().wait()

    monkeypatch.setitem(sys.modules, "centre.console", types.SimpleNamespace(serve_console=serve_console))
    monkeypatch.setitem(sys.modules, "centre.rollout_driver", types.SimpleNamespace(drive_rollouts=drive_rollouts))
    path = write_centre(tmp_path, mqtt_broker.port, f"sqlite:///{tmp_path / 'c.db'}", centre_id=f"c-{unique_id}")
    async with aiomqtt.Client("127.0.0.1", mqtt_broker.port) as client:
        await client.subscribe(f"district/v1/{unique_id}/policy", qos=1)
        async with centre_in_process(path):
            async with asyncio.timeout(10):
                message = await anext(aiter(client.messages))
    assert message.payload == b"bundle"
    assert seen["console"] == 0 and seen["driver"] > T0
