"""Signed policy bundles delivered over MQTT: applied atomically, pushed to lamps, acked;
refused bundles leave the last good policy running."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from edge_agent.clock import ManualClock
from edge_agent.policy.keys import generate_private_key
from tests.agent.harness import (
    POLICY_HEAD,
    eventually,
    observing,
    running,
    sign_policy,
    write_gateway,
    write_trusting_gateway,
)
from tests.conftest import BrokerInfo

T0 = datetime(2026, 1, 1, 8, 0, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()


def _policy(name: str, level: int = 80) -> bytes:
    return (POLICY_HEAD.replace('name = "test"', f'name = "{name}"').replace("level = 80", f"level = {level}")).encode()


def _setup(tmp_path: Path, gw: str, port: int):
    return write_trusting_gateway(tmp_path, gw, port, "")


def _sign(key, payload: bytes, version: int, gateways=("*",), district="naxi", expires=T0 + 86400 * 30) -> bytes:
    return sign_policy(key, payload, version, T0, gateways=tuple(gateways), district=district, expires=expires)


async def test_bundle_is_applied_pushed_to_lamps_acked_and_survives_restart(
    tmp_path: Path, mqtt_broker: BrokerInfo, unique_id: str
) -> None:
    config, key = _setup(tmp_path, unique_id, mqtt_broker.port)
    clock = ManualClock(T0)
    root = f"district/v1/{unique_id}"
    async with observing(mqtt_broker.host, mqtt_broker.port, root) as obs:
        async with running(config, clock) as agent:
            assert agent.policy_version == 0 and agent.engine.policy.policy.name == "test"
            await obs.publish("policy", _sign(key, _policy("v1", 60), 1), retain=True)  # as the centre does
            ack = await eventually(lambda: obs.on("policy/ack"), what="policy ack")
            assert ack[0]["status"] == "accepted" and ack[0]["version"] == 1
            assert agent.policy_version == 1 and agent.engine.policy.policy.name == "v1"
            programs = await eventually(
                lambda: [m.payload for m in obs.matching("/program")] if len(obs.matching("/program")) == 3 else None,
                what="programs pushed to the 3 lamps",
            )
            assert {p["policy_version"] for p in programs} == {1} and {p["level"] for p in programs} == {60.0}
            # two lamps confirm; the third stays silent and keeps getting its program again
            for lamp in ("L1", "L2"):
                await obs.publish(f"lamp/{lamp}/state", {"on": False, "level": 0, "policy_version": 1})
            await eventually(lambda: len(obs.on("lamp/L3/program")) >= 3, what="retries to the silent lamp")
            summary = await eventually(
                lambda: [r for r in obs.on("rollout") if r["on_version"] == 2], what="rollout summary"
            )
            assert summary[-1]["lamps"] == 3 and summary[-1]["policy_version"] == 1 and summary[-1]["retries"] >= 2
            assert len(obs.on("lamp/L1/program")) == 1, "a lamp that confirmed is left alone"

            # refused: rollback, bad signature, wrong target, incompatible, garbage; v1 stays
            await obs.publish("policy", _sign(key, _policy("old"), 1))  # same version, other bytes
            await obs.publish("policy", _sign(generate_private_key(), _policy("evil"), 5))
            await obs.publish("policy", _sign(key, _policy("elsewhere"), 6, gateways=("someone-else",)))
            incompatible = _policy("bad").replace(b"default = ", b"town = ")  # the lamps' group loses its program
            await obs.publish("policy", _sign(key, incompatible, 7))
            await obs.publish("policy", b"\x00garbage")
            acks = await eventually(
                lambda: obs.on("policy/ack") if len(obs.on("policy/ack")) == 6 else None, what="six acks"
            )
            assert [(a["status"], a["reason"]) for a in acks[1:]] == [
                ("rejected", "version_conflict"),
                ("rejected", "unknown_key"),
                ("rejected", "wrong_target"),
                ("rejected", "incompatible"),
                ("rejected", "malformed"),
            ]
            assert agent.policy_version == 1 and agent.engine.policy.policy.name == "v1"
        async with running(config, clock) as agent:
            assert agent.policy_version == 1 and agent.engine.policy.policy.name == "v1"
            # the retained v1 bundle is delivered again on reconnect: a no-op
            acks = await eventually(
                lambda: [a for a in obs.on("policy/ack") if a["status"] == "already_active"], what="no-op ack"
            )
            assert acks[0]["version"] == 1


async def test_gateway_without_trusted_keys_refuses_every_bundle(
    tmp_path: Path, mqtt_broker: BrokerInfo, unique_id: str
) -> None:
    config = write_gateway(tmp_path, unique_id, mqtt_broker.port, "")
    key = generate_private_key()
    async with (
        observing(mqtt_broker.host, mqtt_broker.port, f"district/v1/{unique_id}") as obs,
        running(config, ManualClock(T0)) as agent,
    ):
        await obs.publish("policy", _sign(key, _policy("v1"), 1))
        ack = await eventually(lambda: obs.on("policy/ack"), what="ack")
        assert ack[0]["status"] == "rejected" and ack[0]["reason"] == "no_trusted_keys"
        assert agent.policy_version == 0


def test_rollout_status_names_the_lamps_that_lag(tmp_path: Path, mqtt_broker: BrokerInfo, unique_id: str) -> None:
    import asyncio
    import json
    import subprocess
    import sys

    config, key = _setup(tmp_path, unique_id, mqtt_broker.port)

    async def scenario() -> None:
        async with (
            observing(mqtt_broker.host, mqtt_broker.port, f"district/v1/{unique_id}") as obs,
            running(config, ManualClock(T0)),
        ):
            await obs.publish("policy", _sign(key, _policy("v1"), 1))
            await eventually(lambda: obs.on("policy/ack"), what="ack")
            await obs.publish("lamp/L1/state", {"on": False, "level": 0, "policy_version": 1})
            await obs.publish("lamp/L2/state", {"on": False, "level": 0})
            await eventually(lambda: len(list(obs.matching("/state"))) == 2)
            await asyncio.sleep(1.5)  # the shadow is flushed every second

    asyncio.run(scenario())
    result = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "rollout", "status", "-c", str(config.path), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    status = json.loads(result.stdout)
    assert status["policy_version"] == 1 and status["lamps"] == 3
    assert status["by_version"] == {"1": 1, "None": 2}
    assert status["stuck"] == {"L2": "reports version None", "L3": "never reported"}
