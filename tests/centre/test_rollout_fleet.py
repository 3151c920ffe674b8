"""A rollout in waves to REAL gateways: `edge-agent run` processes with simulated lamps on a real
Mosquitto, the centre's service (ingest + rollout driver) on SQLite in this process. One gateway of
the first wave after the canary already runs a newer version, so it rejects (rollback): the abort
rule fires, the last wave is CANCELED and its gateways never receive the bundle."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from pathlib import Path

import aiomqtt
import pytest

from centre.cli_rollout import driving_service
from centre.config import load_centre_config
from centre.db import Database, open_database
from centre.rollout import assign_waves, make_plan, parse_waves
from centre.rollout_driver import create_rollout, rollout_status
from devtools.fleet import Fleet
from devtools.mosquitto import MosquittoProcess, mosquitto_binary

pytestmark = [
    pytest.mark.broker,
    pytest.mark.timeout(120),  # about 15 s: six gateway processes boot, then three waves
    pytest.mark.skipif(mosquitto_binary() is None, reason="needs Mosquitto (apt-get install mosquitto)"),
]


async def until(what: str, check: object, deadline: float = 40.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if await asyncio.to_thread(check):  # type: ignore[arg-type]
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


async def retained_policy(port: int, gateway: str) -> bytes | None:
    """The retained bundle on a gateway's policy topic, or None (a fresh subscriber, 1 s)."""
    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.subscribe(f"district/v1/{gateway}/policy", qos=1)
        try:
            async with asyncio.timeout(1.0):
                async for message in client.messages:
                    return message.payload if isinstance(message.payload, bytes) else None
        except TimeoutError:
            return None
    return None


def test_waves_to_real_gateways_abort_on_a_rejecting_gateway_then_one_command_rollout(tmp_path: Path) -> None:
    with MosquittoProcess() as mosq:
        (tmp_path / "fleet").mkdir()
        fleet = Fleet(tmp_path / "fleet", mosq.port, n_gateways=6, per_gateway=3, sim_processes=1, broker_pid=mosq.pid)
        (tmp_path / "centre.toml").write_text(
            f'[broker]\nurl = "mqtt://127.0.0.1:{mosq.port}"\n[database]\nurl = "sqlite:///centre.db"\n'
        )
        config = load_centre_config(tmp_path / "centre.toml")
        plan = make_plan(canary=2, waves="50%", abort_if="rejected > 0", window=None, timeout="40s")
        waves = assign_waves(fleet.gateways, 2, parse_waves("50%"))
        assert [len(w) for w in waves] == [2, 2, 2]
        rejecting = waves[1][0]
        fleet.start()
        try:
            asyncio.run(scenario(fleet, mosq.port, config, plan, waves, rejecting))
            asyncio.run(one_command(fleet, tmp_path / "centre.toml"))
        finally:
            fleet.stop()


async def scenario(
    fleet: Fleet, port: int, config: object, plan: object, waves: list[list[str]], rejecting: str
) -> None:
    service = driving_service(config)  # type: ignore[arg-type]
    task = asyncio.create_task(service.run())
    try:
        await until("the centre's database", lambda: service.db is not None)
        db: Database = open_database(config.database_url)  # type: ignore[attr-defined]

        def online() -> bool:
            return len(db.query("SELECT gateway FROM gateways WHERE online = 1")) == len(fleet.gateways)

        await until("every gateway online at the centre", online)
        # the rejecting gateway first takes version 9 (straight from the "old" controller)
        async with aiomqtt.Client("127.0.0.1", port) as client:
            await client.publish(f"district/v1/{rejecting}/policy", fleet.bundle(9, 5), qos=1, retain=True)
        await until(
            "version 9 accepted",
            lambda: (
                db.query("SELECT status FROM policy_acks WHERE gateway = ? AND version = 9", (rejecting,))
                == [("accepted",)]
            ),
        )
        envelope = fleet.bundle(7, 10)
        rid = create_rollout(db, envelope, fleet.gateways, plan, time.time())  # type: ignore[arg-type]

        def ended() -> bool:
            status = rollout_status(db, rid)
            return status is not None and status.state not in ("running", "waiting_window")

        await until("the rollout to end", ended, 60)
        status = rollout_status(db, rid)
        assert status is not None
        by_gateway = {gw: (wave, state, detail) for gw, wave, state, detail in status.targets}
        assert status.state == "aborted", by_gateway
        assert status.reason is not None and "rejected > 0" in status.reason and "rejected=1" in status.reason
        for gw in waves[0]:  # the canary: its gateways' summaries say all 3 lamps confirmed version 7
            assert by_gateway[gw][1:] == ("SUCCEEDED", "3/3 lamps on version 7"), by_gateway
        assert by_gateway[rejecting][1] == "REJECTED" and "rollback" in (by_gateway[rejecting][2] or "")
        for gw in waves[2]:
            assert by_gateway[gw][1] == "CANCELED"
            assert await retained_policy(port, gw) is None, f"{gw} was sent the bundle"
        for gw in waves[0]:
            assert await retained_policy(port, gw) == envelope
        db.close()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def one_command(fleet: Fleet, centre_toml: Path) -> None:
    """The path without a centre service: `centre rollout BUNDLE --drive` to every known gateway, version 10."""
    bundle = centre_toml.parent / "v10.bundle"
    bundle.write_bytes(fleet.bundle(10, 20))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "centre.cli", "rollout", str(bundle), "-c", str(centre_toml),
        "--drive", "--canary", "1", "--waves", "50%,100%", "--timeout", "30s",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    async with asyncio.timeout(60):
        out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text
    assert "succeeded" in text and f"SUCCEEDED={len(fleet.gateways)}" in text, text
