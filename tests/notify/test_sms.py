"""A person answers: an SOS reaches the doctor's phone as an SMS through a real Gammu SMS daemon
(its ``dummy`` phone stands in for the modem: the only part mocked, there is no SIM here), the
doctor's reply "1 <code>" acknowledges it, and only that stops the escalation.

The gateway runs on the in-process bus (no broker); the SMS path is the real one:
outbox -> gammu-smsd-inject -> gammu-smsd -> the dummy phone, and back through the daemon's inbox.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.gammu import DummyModem, SentSms, gammu_smsd_binary
from devtools.gateway_config import SOS_RULE
from edge_agent.clock import ManualClock
from tests.agent.harness import T0, eventually, in_process_village, running, write_gateway

pytestmark = pytest.mark.skipif(
    gammu_smsd_binary() is None, reason="gammu-smsd is not installed (Debian: apt-get install gammu-smsd)"
)

DOC1, DOC2 = "+8613800000001", "+8613800000002"
# the district's language: UCS-2, 67 characters per part once concatenated
TEMPLATE = (
    "【紧急】{device}：{message}。请回复 {ack} {code} 表示已接手，处理完毕回复 {resolve} {code}。"
    "如无法前往请勿回复，系统将在两分钟后通知下一位医生。网关 {gateway}"
)
MESSAGES = f'''
[messages]
sms = "{TEMPLATE}"
'''
CODE = re.compile(r"请回复 1 ([0-9A-Z]{4}) ")


@pytest.fixture
def modem(tmp_path: Path) -> Iterator[DummyModem]:
    with DummyModem(tmp_path / "modem") as modem:
        yield modem


def village_with_phones(tmp_path: Path, modem: DummyModem, gw: str = "sms-gw", rules: str = SOS_RULE):
    extra = {
        "responders": [
            {"id": "doc1", "role": "village_doctor", "phone": DOC1},
            {"id": "doc2", "role": "township_doctor", "phone": DOC2},
        ],
        "modem": {"smsdrc": str(modem.smsdrc), "poll": 0.1},
    }
    village = in_process_village()
    return village, write_gateway(tmp_path, gw, village.port, rules + MESSAGES, extra=extra)


def to(modem: DummyModem, number: str) -> list[SentSms]:
    return [sms for sms in modem.sent() if sms.number == number]


async def test_an_sos_reaches_the_doctor_by_sms_and_a_reply_acknowledges_it(tmp_path: Path, modem: DummyModem) -> None:
    village, config = village_with_phones(tmp_path, modem)
    clock = ManualClock(T0)
    async with village.observing("district/v1/sms-gw") as obs, running(config, clock, links=village.links) as agent:
        await obs.publish("wearable/W1/event", {"event": "sos"})
        [sms] = await eventually(lambda: to(modem, DOC1), timeout=30, what="the SMS handed to the network")
        # what the doctor's phone gets back together is the template's text, to the character
        code = CODE.search(sms.text)
        assert code is not None, sms.text
        expected = TEMPLATE.format(
            device="W1", message="SOS from W1", ack="1", resolve="2", code=code.group(1), gateway="sms-gw"
        )
        assert sms.text == expected
        assert len(sms.parts) == -(-len(expected) // 67) > 1 and all(len(part) <= 67 for part in sms.parts)
        # the app topic still gets it too (all channels at once)
        [app] = await eventually(lambda: obs.on("responder/doc1/alert"), what="the app topic")
        alert_id = app["alert_id"]
        assert agent.store.alerts.get(alert_id).status == "notified"

        modem.receive(DOC1, f"1 {code.group(1).lower()}")  # a phone keyboard: lower case is fine
        await eventually(
            lambda: agent.store.alerts.get(alert_id).status == "acknowledged", timeout=30, what="acknowledged"
        )
        await clock.advance(600)  # far past the 2-minute ack timeout: nobody else is called
        assert not to(modem, DOC2)
        assert not obs.on("responder/doc2/alert")
        assert agent.stats.sms_replies["ack"] == 1

        counters = agent.view.counters()  # what /metrics shows (tests/http/test_readmodel.py)
        assert counters.notifications_by_state[("sms", "handed")] == 1, "sent, and no delivery report (dummy phone)"
        assert counters.notifications_by_state[("app", "handed")] == 1
        assert counters.sms_replies == {"ack": 1} and counters.notify_failed == {}

        modem.receive(DOC1, f"2 {code.group(1)}")  # done: the doctor is free again
        await eventually(lambda: agent.store.alerts.get(alert_id).status == "resolved", timeout=30, what="resolved")


async def test_sent_and_delivered_are_not_acknowledged_silence_escalates(tmp_path: Path, modem: DummyModem) -> None:
    """The daemon sends the SMS and the network's delivery report comes back; that stops
    nothing (and the report is not taken for a reply): with no reply, the next doctor gets an
    SMS at the ack timeout."""
    village, config = village_with_phones(tmp_path, modem)
    clock = ManualClock(T0)
    async with village.observing("district/v1/sms-gw") as obs, running(config, clock, links=village.links) as agent:
        await obs.publish("wearable/W1/event", {"event": "sos"})
        [sms] = await eventually(lambda: to(modem, DOC1), timeout=30, what="doc1's SMS sent")
        for _ in sms.parts:
            modem.report(DOC1)
        reports = modem.root / "inbox" / "reports"
        await eventually(lambda: len(list(reports.glob("IN*"))) == len(sms.parts), timeout=30, what="reports read")
        assert not any(k.startswith("sms_reply_") for k in agent.stats.rejected), "a report is no reply"
        await clock.advance(119)
        assert not to(modem, DOC2) and not obs.on("responder/doc2/alert")
        await clock.advance(1)
        [second] = await eventually(lambda: to(modem, DOC2), timeout=30, what="doc2's SMS at the timeout")
        assert "SOS from W1" in second.text


async def test_replies_that_change_nothing_are_counted_and_answered_once(tmp_path: Path, modem: DummyModem) -> None:
    village, config = village_with_phones(tmp_path, modem)
    clock = ManualClock(T0)
    async with village.observing("district/v1/sms-gw") as obs, running(config, clock, links=village.links) as agent:
        await obs.publish("wearable/W1/event", {"event": "sos"})
        [sms] = await eventually(lambda: to(modem, DOC1), timeout=30, what="doc1's SMS")
        code = CODE.search(sms.text).group(1)  # type: ignore[union-attr]
        [app] = await eventually(lambda: obs.on("responder/doc1/alert"), what="the app topic")
        wrong = next(c for c in ("2222", "3333") if c != code)

        rejected = agent.stats.rejected
        modem.receive("+8613999999999", f"1 {code}")  # a stranger who saw the SMS: no answer at all
        await eventually(lambda: rejected["sms_reply_unknown_number"] == 1, timeout=30, what="stranger counted")
        modem.receive(DOC1, "ok coming")  # not understood: answered
        await eventually(lambda: rejected["sms_reply_not_understood"] == 1, timeout=30, what="doc1 counted")
        modem.receive(DOC1, f"1 {wrong}")  # no such alert: counted, not answered a second time
        await eventually(lambda: rejected["sms_reply_unknown_code"] == 1, timeout=30, what="wrong code counted")
        assert agent.store.alerts.get(app["alert_id"]).status == "notified", "nothing changed so far"
        modem.receive(DOC1, f"1 {code}")  # doc1 takes it
        await eventually(lambda: agent.store.alerts.get(app["alert_id"]).status == "acknowledged", timeout=30)
        modem.receive(DOC2, f"1 {code}")  # taken already: not doc2's any more
        await eventually(lambda: rejected["sms_reply_not_yours"] == 1, timeout=30, what="doc2 counted")
        [answer] = await eventually(lambda: to(modem, DOC2), timeout=30, what="doc2 told it is taken")
        assert "not (or no longer) yours" in answer.text
        await eventually(lambda: len(to(modem, DOC1)) == 2, timeout=30, what="doc1 answered")
        assert "not understood" in to(modem, DOC1)[1].text
        assert agent.store.alerts.get(app["alert_id"]).responder == "doc1"
        assert not to(modem, "+8613999999999")


async def test_a_reply_that_arrived_while_the_agent_was_down_is_applied_once(tmp_path: Path, modem: DummyModem) -> None:
    village, config = village_with_phones(tmp_path, modem)
    clock = ManualClock(T0)
    async with village.observing("district/v1/sms-gw") as obs, running(config, clock, links=village.links):
        await obs.publish("wearable/W1/event", {"event": "sos"})
        [sms] = await eventually(lambda: to(modem, DOC1), timeout=30, what="doc1's SMS")
        [app] = await eventually(lambda: obs.on("responder/doc1/alert"), what="the app topic")
    code = CODE.search(sms.text).group(1)  # type: ignore[union-attr]
    modem.receive(DOC1, f"1 {code}")  # the agent is down: the daemon keeps it in its inbox
    inbox = modem.root / "inbox"
    await eventually(lambda: any(inbox.glob("IN*")), timeout=30, what="the reply in the daemon's inbox")
    async with running(config, clock, links=village.links) as agent:
        await eventually(
            lambda: agent.store.alerts.get(app["alert_id"]).status == "acknowledged", timeout=30, what="applied"
        )
        await eventually(lambda: not any(inbox.glob("IN*")), what="the reply file moved to handled/")
    async with running(config, clock, links=village.links) as agent:  # and not again on the next start
        await clock.advance(600)
        assert agent.stats.sms_replies["ack"] == 0
        assert agent.store.alerts.get(app["alert_id"]).status == "acknowledged"
    assert len(list((inbox / "handled").glob("IN*"))) == 1
    assert not to(modem, DOC2)


async def test_chain_channels_choose_the_sms(tmp_path: Path, modem: DummyModem) -> None:
    """``channels = ["app"]`` in the policy's chain: the alert goes to the app topic, no SMS."""
    rules = SOS_RULE.replace('notify = "medical"', 'notify = "app_only"') + (
        '\n[chains.app_only]\nroles = ["village_doctor"]\nchannels = ["app"]\n'
    )
    village, config = village_with_phones(tmp_path, modem, rules=rules)
    async with (
        village.observing("district/v1/sms-gw") as obs,
        running(config, ManualClock(T0), links=village.links) as agent,
    ):
        await obs.publish("wearable/W1/event", {"event": "sos"})
        await eventually(lambda: obs.on("responder/doc1/alert"), what="the app topic")
        # the SMS would have been queued in the alert's own transaction, before the app message went
        assert not agent.store.outbox.pending("modem")
        assert {channel for channel, _ in agent.store.notifications.by_channel_state()} == {"app"}


async def test_a_failed_sms_is_alarmed_and_when_it_was_the_only_channel_the_next_doctor_is_called_at_once(
    tmp_path: Path, modem: DummyModem
) -> None:
    """The dummy phone never fails a send, so the daemon is stopped and the SMS it would have
    failed is moved to its error folder, as gammu-smsd does when the network refuses it (no
    credit, no signal). The only mocked step: a real modem failure cannot be made here."""
    rules = SOS_RULE.replace('notify = "medical"', 'notify = "sms_only"') + (
        '\n[chains.sms_only]\nroles = ["village_doctor", "township_doctor"]\nack_timeout = "10m"\nchannels = ["sms"]\n'
    )
    village, config = village_with_phones(tmp_path, modem, rules=rules)
    modem.stop()  # SMS stay in its outbox: the test plays the daemon's failure
    outbox, error = modem.root / "outbox", modem.root / "error"
    clock = ManualClock(T0)
    async with village.observing("district/v1/sms-gw") as obs, running(config, clock, links=village.links) as agent:
        await obs.publish("wearable/W1/event", {"event": "sos"})
        [first] = await eventually(lambda: list(outbox.glob(f"*{DOC1}*")), timeout=30, what="doc1's SMS handed over")
        first.rename(error / first.name)
        await eventually(lambda: list(outbox.glob(f"*{DOC2}*")), timeout=30, what="doc2's SMS, at once")
        [alert] = agent.store.alerts.newest()
        assert alert.status == "escalated" and alert.responder == "doc2"
        assert alert.updated == T0, "escalated when the SMS failed, not at the 10-minute timeout"
        assert agent.stats.notify_failed["modem"] == 1 and agent.stats.alarms["sms_failed"] == 1
        assert not obs.on("responder/doc1/alert"), "the chain has no app channel"


async def test_a_failed_sms_beside_the_app_channel_is_alarmed_and_waits_for_the_timeout(
    tmp_path: Path, modem: DummyModem
) -> None:
    village, config = village_with_phones(tmp_path, modem)
    modem.stop()
    outbox, error = modem.root / "outbox", modem.root / "error"
    clock = ManualClock(T0)
    async with village.observing("district/v1/sms-gw") as obs, running(config, clock, links=village.links) as agent:
        await obs.publish("wearable/W1/event", {"event": "sos"})
        [first] = await eventually(lambda: list(outbox.glob(f"*{DOC1}*")), timeout=30, what="doc1's SMS handed over")
        first.rename(error / first.name)
        await eventually(lambda: agent.stats.notify_failed["modem"] == 1, timeout=30, what="the failure counted")
        assert agent.stats.alarms["sms_failed"] == 1
        [alert] = agent.store.alerts.newest()
        assert alert.status == "notified" and alert.responder == "doc1"  # the app may still reach doc1
        await clock.advance(120)
        await eventually(lambda: list(outbox.glob(f"*{DOC2}*")), timeout=30, what="doc2's SMS at the timeout")
