"""How a step reaches its responder, channel by channel, through the real Gammu SMS daemon on its
dummy phone (the only stand-in: there is no SIM here): a delayed channel goes only if the step
is still unanswered, SMS to one phone are paced and what waits goes as one SMS listing every
alert, the SIM's daily cap fails SMS loudly so the chain moves on, and a responder no channel
reaches is skipped at once. Each case reads what the phone really got (the daemon's sent
folder) and the notification ledger the status page shows.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.gammu import DummyModem, gammu_smsd_binary
from devtools.gateway_config import SOS_RULE
from devtools.modem_emulator import Callee, ModemEmulator
from edge_agent.clock import ManualClock
from edge_agent.policy.messages import reply_code
from tests.agent.harness import T0, eventually, in_process_village, running, write_gateway

pytestmark = pytest.mark.skipif(
    gammu_smsd_binary() is None, reason="gammu-smsd is not installed (Debian: apt-get install gammu-smsd)"
)

DOC1, DOC2, CLINIC = "+8613800000001", "+8613800000002", "+8613800000009"


@pytest.fixture
def modem(tmp_path: Path) -> Iterator[DummyModem]:
    with DummyModem(tmp_path / "modem") as modem:
        yield modem


def village(tmp_path: Path, modem: DummyModem, chain: str, responders: list[dict[str, str]], **pacing: object):
    rules = SOS_RULE.replace('notify = "medical"', 'notify = "test"') + "\n[chains.test]\n" + chain
    extra = {
        "responders": responders,
        "modem": {"smsdrc": str(modem.smsdrc), "poll": 0.1, **pacing},
        "wearables": [{"id": f"W{i}", "zone": "lane"} for i in (1, 2, 3)],
    }
    bus = in_process_village()
    return bus, write_gateway(tmp_path, "ch-gw", bus.port, rules, extra=extra)


def texts(modem: DummyModem, number: str) -> list[str]:
    return [sms.text for sms in modem.sent() if sms.number == number]


async def test_a_delayed_channel_goes_only_while_the_step_is_unanswered(tmp_path: Path, modem: DummyModem) -> None:
    """``after = { sms = "60s" }``: the app at once, the SMS a minute later, and not at all when
    the doctor took the alert in the app before then."""
    chain = 'roles = ["village_doctor"]\nack_timeout = "5m"\nchannels = ["app", "sms"]\nafter = { sms = "60s" }\n'
    bus, config = village(tmp_path, modem, chain, [{"id": "doc1", "role": "village_doctor", "phone": DOC1}])
    clock = ManualClock(T0)
    async with bus.observing("district/v1/ch-gw") as obs, running(config, clock, links=bus.links) as agent:
        await obs.publish("wearable/W1/event", {"event": "sos"})
        [first] = await eventually(lambda: obs.on("responder/doc1/alert"), what="the app at once")
        await clock.advance(59)
        ledger = agent.store.notifications.of_step(first["alert_id"], 1)
        assert [(r.channel, r.state) for r in ledger] == [("app", "handed"), ("sms", "waiting")]
        await clock.advance(1)
        [sms] = await eventually(lambda: texts(modem, DOC1), timeout=30, what="the SMS after 60 s")
        assert reply_code(first["alert_id"]) in sms

        await obs.publish("wearable/W2/event", {"event": "sos"})  # doc1 is busy: it waits for them
        await obs.publish("responder/doc1/ack", {"alert_id": first["alert_id"]})
        await obs.publish("responder/doc1/resolved", {"alert_id": first["alert_id"]})
        second = await eventually(
            lambda: [m for m in obs.on("responder/doc1/alert") if m["alert_id"] != first["alert_id"]],
            timeout=30,
            what="the second alert offered to doc1",
        )
        await obs.publish("responder/doc1/ack", {"alert_id": second[0]["alert_id"]})  # in the app, within the minute
        await eventually(lambda: agent.store.alerts.get(second[0]["alert_id"]).status == "acknowledged", timeout=30)
        await clock.advance(120)
        await eventually(
            lambda: agent.store.notifications.of_step(second[0]["alert_id"], 1)[1].state == "cancelled",
            timeout=30,
            what="the delayed SMS cancelled",
        )
        assert len(texts(modem, DOC1)) == 1, "no SMS for an alert the doctor already took"


async def test_sms_to_one_phone_are_paced_and_what_waits_goes_as_one_sms(tmp_path: Path, modem: DummyModem) -> None:
    """Two doctors share the clinic's phone: three alerts at once give one SMS now and, a pacing
    interval later, one SMS listing the other two with their codes; a reply with either code
    takes that alert for the doctor it was offered to."""
    chain = 'roles = ["village_doctor"]\nack_timeout = "10m"\nchannels = ["sms"]\n'
    responders = [{"id": f"doc{i}", "role": "village_doctor", "phone": CLINIC} for i in (1, 2, 3)]
    bus, config = village(tmp_path, modem, chain, responders, every="2m")
    clock = ManualClock(T0)
    async with bus.observing("district/v1/ch-gw") as obs, running(config, clock, links=bus.links) as agent:
        for w in ("W1", "W2", "W3"):
            await obs.publish(f"wearable/{w}/event", {"event": "sos"})
        await eventually(lambda: len(agent.store.alerts.newest()) == 3, timeout=30, what="three alerts")
        [one] = await eventually(lambda: texts(modem, CLINIC), timeout=30, what="the first SMS")
        # gammu-smsd names a sent SMS by number and wall-clock second: two to one number within
        # a second share a name (pacing keeps real ones minutes apart; this clock is manual)
        await asyncio.sleep(1.1)
        await clock.advance(60)
        assert len(texts(modem, CLINIC)) == 1, "the clinic's phone gets at most one SMS per 2 minutes"
        await clock.advance(60)
        [_, storm] = await eventually(lambda: texts(modem, CLINIC)[:2] if len(texts(modem, CLINIC)) == 2 else [])
        alerts = agent.store.alerts.newest()
        codes = {a.alert_id: reply_code(a.alert_id) for a in alerts}
        in_first = [a for a, c in codes.items() if c in one]
        in_storm = [a for a, c in codes.items() if c in storm]
        assert len(in_first) == 1 and len(in_storm) == 2 and set(in_first + in_storm) == set(codes)
        assert storm.startswith("2 alerts: ")
        ledger = agent.store.notifications
        assert len({r.msg_id for a in in_storm for r in ledger.of_step(a, 1)}) == 1, "one message for both"

        modem.receive(CLINIC, f"1 {codes[in_storm[1]]}")
        taken = in_storm[1]
        await eventually(lambda: agent.store.alerts.get(taken).status == "acknowledged", timeout=30)
        assert agent.store.alerts.get(in_storm[0]).status == "notified"


async def test_the_daily_cap_fails_sms_loudly_and_the_chain_moves_on(tmp_path: Path, modem: DummyModem) -> None:
    chain = 'roles = ["village_doctor", "township_doctor"]\nack_timeout = "10m"\nchannels = ["sms"]\n'
    responders = [
        {"id": "doc1", "role": "village_doctor", "phone": DOC1},
        {"id": "doc2", "role": "township_doctor", "phone": DOC2},
    ]
    bus, config = village(tmp_path, modem, chain, responders, daily_cap=1)
    clock = ManualClock(T0)
    async with bus.observing("district/v1/ch-gw") as obs, running(config, clock, links=bus.links) as agent:
        await obs.publish("wearable/W1/event", {"event": "sos"})
        await eventually(lambda: texts(modem, DOC1), timeout=30, what="doc1's SMS: the day's one")
        await clock.advance(600)  # no answer: doc2's SMS is over the cap, so it fails, and the chain moves on
        [alert] = agent.store.alerts.newest()
        await eventually(lambda: agent.stats.alarms["sms_cap"] == 1, timeout=30, what="the cap alarmed")
        await eventually(lambda: agent.store.notifications.of_step(alert.alert_id, 2)[0].state == "failed", timeout=30)
        [row] = agent.store.notifications.of_step(alert.alert_id, 2)
        assert (row.responder, row.reason) == ("doc2", "daily SMS cap (1) reached")
        # doc2 was the chain's last step: a new round starts at the ack timeout, not at once
        # (every responder unreachable would otherwise call round and round without a pause)
        assert agent.store.alerts.get(alert.alert_id).responder == "doc2"
        await clock.advance(600)
        await eventually(lambda: agent.store.alerts.get(alert.alert_id).responder == "doc1", timeout=30)
        assert not texts(modem, DOC2) and len(texts(modem, DOC1)) == 1


async def test_a_responder_no_channel_reaches_is_skipped_at_once(tmp_path: Path, modem: DummyModem) -> None:
    """doc1 has no phone and the chain is SMS only: the township doctor's SMS goes at once, not
    at the 10-minute timeout, and the gap is alarmed."""
    chain = 'roles = ["village_doctor", "township_doctor"]\nack_timeout = "10m"\nchannels = ["sms"]\n'
    responders = [{"id": "doc1", "role": "village_doctor"}, {"id": "doc2", "role": "township_doctor", "phone": DOC2}]
    bus, config = village(tmp_path, modem, chain, responders)
    clock = ManualClock(T0)
    async with bus.observing("district/v1/ch-gw") as obs, running(config, clock, links=bus.links) as agent:
        await obs.publish("wearable/W1/event", {"event": "sos"})
        [sms] = await eventually(lambda: texts(modem, DOC2), timeout=30, what="doc2's SMS at once")
        [alert] = agent.store.alerts.newest()
        assert alert.responder == "doc2" and alert.updated == T0
        assert agent.stats.alarms["unreachable"] == 1
        assert re.search(r"SOS from W1", sms)


async def test_sms_then_a_ring_a_minute_later_and_a_failed_ring_moves_the_chain_on(
    tmp_path: Path, modem: DummyModem
) -> None:
    """The Naxi pattern: SMS at once, a ring (a missed call) after 60 s while nobody answered,
    on the modem's AT port (an emulated modem on a pseudo-terminal: no SIM here). doc1's ring
    is busy; doc2's rings. The emulator's own record is what is checked."""
    chain = (
        'roles = ["village_doctor", "township_doctor"]\nack_timeout = "5m"\n'
        'channels = ["sms", "ring"]\nafter = { ring = "60s" }\n'
    )
    responders = [
        {"id": "doc1", "role": "village_doctor", "phone": DOC1},
        {"id": "doc2", "role": "township_doctor", "phone": DOC2},
    ]
    with ModemEmulator({DOC1: Callee(busy=True)}) as phone_network:
        bus, config = village(tmp_path, modem, chain, responders, ring_port=phone_network.port, ring_seconds=0.5)
        clock = ManualClock(T0)
        async with bus.observing("district/v1/ch-gw"), running(config, clock, links=bus.links) as agent:
            await bus_publish_sos(bus)
            await eventually(lambda: texts(modem, DOC1), timeout=30, what="doc1's SMS at once")
            await clock.advance(59)
            assert not phone_network.record()
            [alert] = agent.store.alerts.newest()
            await clock.advance(1)
            await eventually(lambda: phone_network.record(), timeout=30, what="doc1's ring after 60 s")
            assert phone_network.record()[0].number == DOC1
            # busy: the ring failed; the SMS was sent, so a person may still read it: the ack
            # timeout decides (only when every channel failed does the chain move at once)
            await eventually(
                lambda: agent.store.notifications.of_step(alert.alert_id, 1)[1].state == "failed", timeout=30
            )
            assert agent.store.alerts.get(alert.alert_id).responder == "doc1"
            await clock.advance(240)
            await eventually(lambda: texts(modem, DOC2), timeout=30, what="doc2's SMS at the ack timeout")
            await clock.advance(60)
            await eventually(
                lambda: len(phone_network.record()) == 2 and phone_network.record()[1].ended is not None,
                timeout=30,
                what="doc2's ring, rung and hung up",
            )
            call = phone_network.record()[1]
            assert call.number == DOC2 and call.alerting is not None and call.ended_by == "gateway"
            await eventually(
                lambda: [r.state for r in agent.store.notifications.of_step(alert.alert_id, 2)][1] == "delivered",
                timeout=30,
                what="doc2's ring delivered (it rang at the far end)",
            )


async def bus_publish_sos(bus) -> None:  # type: ignore[no-untyped-def]
    async with bus.observing("district/v1/ch-gw") as obs:
        await obs.publish("wearable/W1/event", {"event": "sos"})
