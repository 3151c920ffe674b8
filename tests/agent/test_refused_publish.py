"""A publish the broker refuses is never deleted as delivered (MQTT 5 PUBACK reason codes).

The city broker runs the shipped ACL (deploy/mosquitto/acl) with the telemetry grant removed,
as a broker provisioned from an older ACL would be. Under MQTT 3.1.1 Mosquitto acknowledges a
denied QoS 1 publish like a delivered one, and the outbox used to delete it. Now the refused
telemetry stays in the outbox (parked, retried later), is counted by reason and raises the
local alarm once, while the alerts behind it still reach the centre.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import shutil
import subprocess
from pathlib import Path
from typing import Any

import aiomqtt
import msgspec
import pytest

from devtools.gateway_config import write_gateway_config
from devtools.mosquitto import MosquittoProcess, mosquitto_binary
from edge_agent.agent.app import Agent
from edge_agent.clock import ScaledClock
from edge_agent.config import load_config
from tests.agent.harness import POLICY_HEAD, SOS_RULE, eventually, observing
from tests.conftest import BrokerInfo

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_ACL = ROOT / "deploy" / "mosquitto" / "acl"

pytestmark = [
    pytest.mark.skipif(mosquitto_binary() is None, reason="needs the mosquitto binary"),
    pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="needs mosquitto_passwd"),
]


def _acl_without_telemetry(path: Path) -> None:
    lines = SHIPPED_ACL.read_text().splitlines()
    kept = [line for line in lines if "telemetry" not in line or line.startswith("#")]
    assert len(kept) < len(lines), "the shipped ACL no longer grants telemetry: rewrite this test"
    path.write_text("\n".join(kept) + "\n")


async def test_a_refused_publish_stays_in_the_outbox_is_counted_and_alarmed(
    tmp_path: Path, mqtt_broker: BrokerInfo, unique_id: str
) -> None:
    gw = unique_id
    passwd, acl = tmp_path / "passwd", tmp_path / "acl"
    for user, password in ((gw, "gw-pw"), ("centre", "centre-pw")):
        create = [] if passwd.exists() else ["-c"]
        await asyncio.to_thread(
            subprocess.run, ["mosquitto_passwd", *create, "-b", str(passwd), user, password], check=True
        )
    _acl_without_telemetry(acl)
    extra = f"allow_anonymous false\npassword_file {passwd}\nacl_file {acl}\nuser {getpass.getuser()}\n"
    with MosquittoProcess(extra_config=extra) as city:
        path = write_gateway_config(
            tmp_path,
            gw,
            south_url=f"mqtt://127.0.0.1:{mqtt_broker.port}",
            north_url=f"mqtt://127.0.0.1:{city.port}",
            north={"username": gw, "password": "gw-pw"},
            policy_text=POLICY_HEAD + SOS_RULE,
        )
        config = load_config(path)
        centre_seen: list[str] = []

        async def centre() -> None:
            async with aiomqtt.Client(
                city.host, city.port, username="centre", password="centre-pw", protocol=aiomqtt.ProtocolVersion.V5
            ) as client:
                await client.subscribe(f"district/v1/{gw}/#", qos=1)
                async for message in client.messages:
                    centre_seen.append(str(message.topic))

        agent = Agent(config, ScaledClock())
        tasks = [asyncio.create_task(agent.run()), asyncio.create_task(centre())]
        try:
            async with observing(mqtt_broker.host, mqtt_broker.port, f"district/v1/{gw}") as south:
                await asyncio.wait_for(agent.ready.wait(), 15)
                await eventually(lambda: agent.north is not None and agent.north.connected, what="north link up")
                await south.publish("lamp/L1/state", {"on": True, "level": 80.0, "power_w": 40.0})
                await eventually(
                    lambda: agent.store.outbox.refused().get("not_authorized") == 1, what="telemetry parked"
                )
                await south.publish("wearable/W1/event", {"event": "sos", "seq": 1})
                await eventually(lambda: f"district/v1/{gw}/alert" in centre_seen, what="the alert at the centre")
                alarms: list[Any] = await eventually(lambda: south.on("alarm"), what="the local alarm")

            assert alarms[0]["reason"] == "north_refused"
            assert "telemetry/lamp/L1" in alarms[0]["detail"] and "not_authorized" in alarms[0]["detail"]
            assert agent.stats.refused["north.not_authorized"] == 1
            kept = agent.store.db.execute("SELECT topic, payload, refused FROM outbox WHERE link = 'north'").fetchall()
            assert [(topic, refused) for topic, _, refused in kept] == [
                (f"district/v1/{gw}/telemetry/lamp/L1", "not_authorized")
            ]
            assert msgspec.json.decode(kept[0][1])["level"] == 80.0
            assert not [topic for topic in centre_seen if "telemetry" in topic]
            # parked: not offered again (and not alarmed again) until its retry time
            assert agent.store.outbox.pending("north", now=agent.clock.now()) == []
            assert len(agent.store.outbox.pending("north")) == 1
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
