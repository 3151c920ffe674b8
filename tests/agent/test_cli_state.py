"""`edge-agent traces` and `edge-agent alerts` read what a gateway recorded."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from edge_agent.clock import ManualClock
from tests.agent.harness import eventually, observing, running, write_gateway
from tests.conftest import BrokerInfo

T0 = datetime(2026, 1, 1, 8, 0, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()
RULES = """
[[rules]]
id = "sos"
when = { trigger = "event", event = "sos", kind = "wearable" }
then = [ { action = "alert", priority = 1, message = "SOS from {device}", notify = "medical" } ]

[[rules]]
id = "low-battery"
when = { trigger = "event", event = "vitals", kind = "wearable" }
if = "battery < 15"
then = [ { action = "publish", topic = "low-battery" } ]
"""


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_agent.cli", *args], capture_output=True, text=True, timeout=60)


def test_traces_and_alerts_show_what_the_rules_did(tmp_path: Path, mqtt_broker: BrokerInfo, unique_id: str) -> None:
    config = write_gateway(tmp_path, unique_id, mqtt_broker.port, RULES)

    async def night() -> None:
        async with (
            observing(mqtt_broker.host, mqtt_broker.port, f"district/v1/{unique_id}") as obs,
            running(config, ManualClock(T0)),
        ):
            await obs.publish("wearable/W1/vitals", {"battery": 80})
            await obs.publish("wearable/W1/vitals", {"battery": 9})
            await obs.publish("wearable/W1/event", b"{broken")  # handled before the SOS behind it
            await obs.publish("wearable/W1/event", {"event": "sos", "seq": 1})
            await eventually(lambda: obs.on("responder/doc1/alert") and obs.on("event/low-battery"))

    asyncio.run(night())
    out = cli("traces", "-c", str(config.path), "--json")
    assert out.returncode == 0, out.stderr
    traces = [json.loads(line) for line in out.stdout.splitlines()]
    battery = [t for t in traces if t["rule"] == "low-battery"]
    assert [t["condition"]["result"] for t in battery] == [True, False]  # newest first
    assert battery[0]["actions"] == ["publish low-battery"] and battery[1]["actions"] == []
    sos = [t for t in traces if t["rule"] == "sos"]
    assert sos[0]["trigger"] == {"type": "event", "event": "sos", "device": "W1"}
    assert sos[0]["actions"][0].startswith("alert ") and sos[0]["duration_us"] >= 0
    only = cli("traces", "-c", str(config.path), "--rule", "sos", "--json")
    assert {json.loads(line)["rule"] for line in only.stdout.splitlines()} == {"sos"}
    table = cli("alerts", "-c", str(config.path))
    assert table.returncode == 0 and "SOS from W1" in table.stdout and "doc1" in table.stdout
    counted = cli("counters", "-c", str(config.path))
    assert counted.returncode == 0 and "rejected.bad_json" in counted.stdout


def test_reading_state_before_the_agent_ever_ran_says_what_to_do(
    tmp_path: Path, mqtt_broker: BrokerInfo, unique_id: str
) -> None:
    config = write_gateway(tmp_path, unique_id, mqtt_broker.port, RULES)
    out = cli("traces", "-c", str(config.path))
    assert out.returncode == 1 and "run the agent first" in out.stderr
