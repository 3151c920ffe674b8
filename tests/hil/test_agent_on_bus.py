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
from edge_agent.codec import registers as regmap
from edge_agent.config import load_config
from edge_agent.policy.bundle_sign import build_bundle, sign_bundle
from edge_agent.policy.keys import generate_private_key, key_id, public_key_to_pem
from edge_agent.transports.modbus_bus import BusSettings, ModbusLampBus
from hardware.hil.procs import micropython_binary
from tests.agent.harness import eventually, observing, running
from tests.conftest import BrokerInfo

from .conftest import DongleTarget, LampTarget, dongle_stats, emulated_dongle

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


async def test_an_sos_whose_ack_a_power_cut_swallows_rings_the_doctor_once(
    request: pytest.FixtureRequest, tmp_path: Path, mqtt_broker: BrokerInfo, unique_id: str
) -> None:
    """The agent commits the SOS and ACKs it; the dongle loses power as the ACK arrives, before
    it handles it (``cut 0``). Rebooted, it sends the SOS again with its old seq, then a new
    HELLO: the agent acks the copy without a second alert."""
    if request.config.getoption("--dongle-port") or micropython_binary() is None:
        pytest.skip("the power cut is injected on the emulated dongle")
    url = f"mqtt://127.0.0.1:{mqtt_broker.port}"
    with emulated_dongle(tmp_path, supervise=True) as target:
        path = write_gateway_config(
            tmp_path,
            unique_id,
            policy_text=POLICY_HEAD + SOS_RULE,
            south_url=url,
            north_url=url,
            lamps=(),
            cameras=(),
            wearables=[
                {"id": "grandma-wu", "link": "dongle", "radio_id": 101},
                {"id": "grandpa-he", "link": "dongle", "radio_id": 102},
            ],
            dongle={"port": target.port},
        )
        assert target.process is not None
        async with (
            observing(mqtt_broker.host, mqtt_broker.port, f"district/v1/{unique_id}") as obs,
            running(load_config(path), ManualClock(T0)),
        ):
            acked = 0
            async with asyncio.timeout(30):  # its HELLO ACKed before the cut is armed (a slow start is no excuse)
                while acked < 1:
                    acked = (await dongle_stats(target))["acked"]  # (each answer takes the dongle a moment)
            os.write(target.radio, b"cut 0\nsos 101 80\n")
            await eventually(lambda: obs.on("responder/doc1/alert"), timeout=30, what="the doctor's phone rings")
            await asyncio.to_thread(target.process.wait_boots, 2)
            os.write(target.radio, b"fall 102 3 79\n")  # after the reboot: a new alarm, a new alert
            await eventually(lambda: [a for a in obs.on("alert") if "fall" in a["message"]], timeout=30, what="fall")
            await asyncio.sleep(1.0)
            messages = sorted(a["message"] for a in obs.on("alert"))
            assert messages == ["fall from grandpa-he", "sos from grandma-wu"], messages  # the SOS once
            assert len(obs.on("responder/doc1/alert")) == 1
        log = target.process.log()
        assert "power cut at point 0" in log and "resend seq=2" in log


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


async def test_rollout_gives_each_node_the_gateways_site_and_the_polar_night(
    lamp_target: LampTarget, tmp_path: Path, mqtt_broker: BrokerInfo, unique_id: str
) -> None:
    """At rollout the agent writes the program and the node's site (HR 24-30: the gateway's
    latitude/longitude, its UTC offset, the policy's switch kinds and offsets). Left alone in
    Tromsø on New Year's Day (polar night: the sun does not rise), the node lights the street
    from noon, as the gateway would, instead of waiting for a sunset that never comes."""
    if lamp_target.line is None:
        pytest.skip("the node's clock and silence are steered on the emulated node")
    url = f"mqtt://127.0.0.1:{mqtt_broker.port}"
    bus = {"port": lamp_target.port, "baudrate": 9600, "poll_interval": 0.3, "timeout": 0.5, "silence_timeout": 2}
    noon = datetime(2026, 1, 1, 12, 30, tzinfo=ZoneInfo("Europe/Oslo")).timestamp()
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
        latitude=69.65,
        longitude=18.96,
        timezone="Europe/Oslo",
    )
    key = generate_private_key()
    (tmp_path / "centre.pub").write_bytes(public_key_to_pem(key.public_key()))
    async with (
        observing(mqtt_broker.host, mqtt_broker.port, f"district/v1/{unique_id}") as obs,
        running(load_config(path), ManualClock(noon)),
    ):
        await eventually(lambda: obs.on("telemetry/lamp/N1"), timeout=20, what="first bus reading")
        bundle = build_bundle(
            (tmp_path / "policy.toml").read_bytes().replace(b'name = "test"', b'name = "v3"'),
            kind="policy", district="naxi", gateways=["*"], version=3, issued_at=int(noon),
            not_before=int(noon) - 60, expires=int(noon) + 86400, key_id=key_id(key.public_key()), force=True,
        )  # fmt: skip
        await obs.publish("policy", sign_bundle(bundle, key))
        for unit in lamp_target.units:
            await eventually(
                lambda unit=unit: any(t.get("policy_version") == 3 for t in obs.on(f"telemetry/lamp/N{unit}")),
                timeout=20,
                what=f"node {unit} stores program v3",
            )
    # the gateway is gone: read what the nodes stored, then let them run alone
    settings = BusSettings(port=lamp_target.port, units=lamp_target.units, timeout=0.5, retries=3, poll_interval=0)
    # POLICY_HEAD: on = "sunset+10m", off = "sunrise-15m"; Tromsø 69.65 N 18.96 E; Oslo in January: UTC+1
    want = [6965, 1896, 60, regmap.SWITCH_SUN, 10, regmap.SWITCH_SUN, (-15) & 0xFFFF]
    async with ModbusLampBus(settings) as modbus:
        for unit in lamp_target.units:
            assert await modbus.read_holding(unit, regmap.HR_LATITUDE, 7) == want, unit
        await asyncio.sleep(2.5)  # > silence_timeout: the nodes fall back to their programs
        for unit in lamp_target.units:
            reading = await modbus.poll(unit)
            assert reading.fallback and reading.program_version == 3
            # 12:30 on a polar night: lit at the program's level (80 %), like the gateway's
            # night_switch_minutes (on at noon); a node waiting for sunset would be dark
            assert reading.level == 80, reading
