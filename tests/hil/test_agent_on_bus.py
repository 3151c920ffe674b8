"""The whole agent with lamp nodes on a Modbus bus: bus lamps obey the same rules and policy
rollout as MQTT lamps. Firmware under the MicroPython unix port on a pty by default; a real
board with `just hil --port /dev/ttyUSB0 --units 1,2`."""

from __future__ import annotations

import asyncio
import os
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from devtools.gateway_config import POLICY_HEAD, write_gateway_config
from edge_agent.clock import ManualClock
from edge_agent.config import load_config
from edge_agent.policy.bundle import build_bundle, generate_private_key, key_id, public_key_to_pem, sign_bundle
from hardware import registers as regmap
from tests.agent.harness import eventually, observing, running
from tests.conftest import BrokerInfo

from .conftest import DongleTarget, LampTarget

pytestmark = [pytest.mark.hil, pytest.mark.timeout(90)]

T0 = datetime(2026, 1, 1, 8, 0, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()

RULES = """
[[rules]]
id = "market"
when = { trigger = "event", event = "motion", kind = "camera" }
then = [ { action = "set_lamp", zone = "square", level = 70, for = "10m" } ]
"""


async def test_bus_lamps_follow_rules_and_take_a_signed_policy(
    lamp_target: LampTarget, tmp_path: Path, mqtt_broker: BrokerInfo, unique_id: str
) -> None:
    url = f"mqtt://127.0.0.1:{mqtt_broker.port}"
    bus = {"port": lamp_target.port, "baudrate": lamp_target.baudrate, "poll_interval": 0.3, "timeout": 0.5}
    path = write_gateway_config(
        tmp_path,
        unique_id,
        policy_text=POLICY_HEAD + RULES,
        south_url=url,
        north_url=url,
        trust_keys=["centre.pub"],
        lamps=[{"id": f"N{u}", "zone": "square", "bus": "street", "unit": u} for u in lamp_target.units],
        wearables=(),
        buses={"street": bus},
    )
    key = generate_private_key()
    (tmp_path / "centre.pub").write_bytes(public_key_to_pem(key.public_key()))
    config = load_config(path)
    clock = ManualClock(T0)
    first = f"N{lamp_target.units[0]}"
    async with observing(mqtt_broker.host, mqtt_broker.port, f"district/v1/{unique_id}") as obs, running(config, clock):
        # readings from the bus arrive as lamp telemetry, like an MQTT lamp's state
        await eventually(lambda: obs.on(f"telemetry/lamp/{first}"), timeout=20, what="first bus reading")
        await obs.publish("camera/C1/event", {"detection": "motion"})
        lit = await eventually(
            lambda: [t for t in obs.on(f"telemetry/lamp/{first}") if t["level"] == 70],
            timeout=20,
            what="node dimmed to 70",
        )
        assert lit[0]["power_w"] == pytest.approx(regmap.expected_power_w(70, True), abs=0.2)
        await clock.advance(600)  # the override ends: daytime program level 0
        await eventually(
            lambda: obs.on(f"telemetry/lamp/{first}")[-1]["level"] == 0, timeout=20, what="node back to program"
        )
        # a signed policy: every node stores its fallback program, and reports its version
        bundle = build_bundle(
            (tmp_path / "policy.toml").read_bytes().replace(b'name = "test"', b'name = "v7"'),
            kind="policy", district="naxi", gateways=["*"], version=7, issued_at=int(T0), not_before=int(T0) - 60,
            expires=int(T0) + 86400, key_id=key_id(key.public_key()), force=True,
        )  # fmt: skip
        await obs.publish("policy", sign_bundle(bundle, key))
        for unit in lamp_target.units:
            await eventually(
                lambda unit=unit: any(t.get("policy_version") == 7 for t in obs.on(f"telemetry/lamp/N{unit}")),
                timeout=20,
                what=f"node {unit} confirms program v7",
            )
        summary = await eventually(lambda: [r for r in obs.on("rollout") if r["on_version"] == len(lamp_target.units)])
        assert summary[-1]["policy_version"] == 7


SOS_RULE = """
[[rules]]
id = "sos"
when = { trigger = "event", event = ["sos", "fall"], kind = "wearable" }
then = [ { action = "alert", priority = 1, message = "{event} from {device}", notify = "medical" } ]
"""


async def test_an_sos_through_the_dongle_firmware_rings_the_doctor_once(
    dongle_target: DongleTarget, tmp_path: Path, mqtt_broker: BrokerInfo, unique_id: str
) -> None:
    url = f"mqtt://127.0.0.1:{mqtt_broker.port}"
    path = write_gateway_config(
        tmp_path,
        unique_id,
        policy_text=POLICY_HEAD + SOS_RULE,
        south_url=url,
        north_url=url,
        lamps=(),
        cameras=(),
        wearables=[{"id": "grandma-wu", "link": "dongle", "radio_id": 101}],
        dongle={"port": dongle_target.port},
    )
    config = load_config(path)
    async with (
        observing(mqtt_broker.host, mqtt_broker.port, f"district/v1/{unique_id}") as obs,
        running(config, ManualClock(T0)),
    ):
        if dongle_target.line is not None:
            dongle_target.line.loss = 0.05  # a noisy USB line: the dongle retransmits
        os.write(dongle_target.radio, b"sos 101 80\n")
        rang = await eventually(lambda: obs.on("responder/doc1/alert"), timeout=30, what="the doctor's phone rings")
        assert rang[0]["message"] == "sos from grandma-wu" and rang[0]["device"] == "grandma-wu"
        os.write(dongle_target.radio, b"hb 101 80 -60\n")  # a later packet as a marker
        await eventually(lambda: len(obs.on("alert")) >= 1, timeout=30)
        await asyncio.sleep(1.0)
        assert len(obs.on("responder/doc1/alert")) == 1, "the SOS must arrive exactly once"


FAULT_RULE = """
[[rules]]
id = "lamp-fault"
when = { trigger = "event", event = "fault", kind = "lamp" }
then = [ { action = "alert", priority = 3, message = "lamp {device} fault bits {faults}", notify = "medical" } ]
"""


async def test_a_measured_lamp_fault_on_the_node_raises_the_gateway_alert(
    lamp_target: LampTarget, tmp_path: Path, mqtt_broker: BrokerInfo, unique_id: str
) -> None:
    if lamp_target.line is None:
        pytest.skip("the open lamp is injected on the emulated node")
    url = f"mqtt://127.0.0.1:{mqtt_broker.port}"
    bus = {"port": lamp_target.port, "baudrate": lamp_target.baudrate, "poll_interval": 0.3, "timeout": 0.5}
    path = write_gateway_config(
        tmp_path,
        unique_id,
        policy_text=POLICY_HEAD + RULES + FAULT_RULE,
        south_url=url,
        north_url=url,
        lamps=[{"id": f"N{u}", "zone": "square", "bus": "street", "unit": u} for u in lamp_target.units],
        wearables=(),
        buses={"street": bus},
    )
    config = load_config(path)
    first = f"N{lamp_target.units[0]}"
    async with (
        observing(mqtt_broker.host, mqtt_broker.port, f"district/v1/{unique_id}") as obs,
        running(config, ManualClock(T0)),
    ):
        await obs.publish("camera/C1/event", {"detection": "motion"})  # the square lit at 70 %
        await eventually(
            lambda: [t for t in obs.on(f"telemetry/lamp/{first}") if t["level"] == 70], timeout=20, what="lit"
        )
        assert not obs.on("alert")
        lamp_target.nodes[0].command("fault open")  # the lamp's tube breaks: no current
        alerts = await eventually(
            lambda: [a for a in obs.on("alert") if first in str(a.get("message", ""))], timeout=20, what="fault alert"
        )
        assert f"fault bits {regmap.FAULT_LAMP}" in alerts[0]["message"]
