"""What became of an SMS the gateway handed to Gammu's SMS daemon (``ModemLink.reports``):
delivered when the network's delivery report for every part came back, failed when a report
says so or the daemon gave up on it. Run against a real gammu-smsd on its ``dummy`` phone
(``deliveryreport = sms``, as shipped); the dummy phone receives each delivery report as the
network would send it (a status-report entry in its SMS memory, devtools/gammu.py ``report``)
and the daemon writes it into its inbox as it does a real modem's. The dummy phone gives every
SMS the message reference 255 and never fails a send: the only mocked step is the move to
``error/`` in the last test, played as the daemon does it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.gammu import DummyModem, gammu_smsd_binary
from edge_agent.config.gammu import read_smsdrc
from edge_agent.notify.gammu import GAVE_UP, ModemLink, read_status_report
from edge_agent.notify.report import NotifyLink, Report
from tests.agent.harness import eventually

pytestmark = pytest.mark.skipif(
    gammu_smsd_binary() is None, reason="gammu-smsd is not installed (Debian: apt-get install gammu-smsd)"
)

DOC1, DOC2 = "+8613800000001", "+8613800000002"
LONG = (
    "【紧急】W1：SOS from W1。请回复 1 K7QD 表示已接手，处理完毕回复 2 K7QD。如无法前往请勿回复，系统将通知下一位医生。"
)


@pytest.fixture
def modem(tmp_path: Path) -> Iterator[DummyModem]:
    with DummyModem(tmp_path / "modem") as modem:
        yield modem


async def collect(link: ModemLink, until: int, what: str) -> list[Report]:
    found: list[Report] = []

    def more() -> bool:
        found.extend(link.reports())
        return len(found) >= until

    await eventually(more, timeout=30, what=what)
    return found


async def sent(modem: DummyModem, count: int) -> None:
    await eventually(lambda: len(modem.transmitted()) >= count, timeout=30, what=f"{count} SMS sent")


def test_the_modem_link_is_a_notify_link(modem: DummyModem) -> None:
    assert isinstance(ModemLink(read_smsdrc(modem.smsdrc)), NotifyLink)


async def test_delivery_reports_say_delivered_per_sms_in_the_order_sent(modem: DummyModem) -> None:
    link = ModemLink(read_smsdrc(modem.smsdrc))
    await link.publish(f"sms/{DOC1}/a1", b"first")
    await link.publish(f"sms/{DOC2}/a2", b"to the other doctor")
    await link.publish(f"sms/{DOC1}/a3,a4", b"second, for two alerts")
    await sent(modem, 3)
    assert link.reports() == [], "sent is not delivered"
    modem.report(DOC1)  # the network reports one number's SMS in the order it delivered them
    assert await collect(link, 1, "a1 delivered") == [Report(f"sms/{DOC1}/a1", "delivered")]
    modem.report(DOC1)
    modem.report(DOC2)
    got = await collect(link, 2, "a3,a4 and a2 delivered")
    assert sorted(got, key=lambda r: r.topic) == [
        Report(f"sms/{DOC1}/a3,a4", "delivered"),
        Report(f"sms/{DOC2}/a2", "delivered"),
    ]
    await asyncio.sleep(1.5)  # nothing more comes: each is reported once
    assert link.reports() == []
    # the report files left the inbox: never taken for a doctor's reply
    assert link.received() == []
    assert len(list((modem.root / "inbox" / "reports").glob("IN*"))) == 3


async def test_a_long_sms_is_delivered_when_every_part_is(modem: DummyModem) -> None:
    link = ModemLink(read_smsdrc(modem.smsdrc))
    await link.publish(f"sms/{DOC1}/a1", LONG.encode())
    await sent(modem, 1)
    [sms] = modem.sent()
    assert len(sms.parts) == 2  # Gammu split it (UCS-2, 67 characters a part)
    modem.report(DOC1)
    await eventually(lambda: not any((modem.root / "inbox").glob("IN*")), timeout=30, what="first part's report read")
    assert link.reports() == [], "one part of two delivered"
    modem.report(DOC1)
    assert await collect(link, 1, "delivered") == [Report(f"sms/{DOC1}/a1", "delivered")]


async def test_a_failed_or_pending_report(modem: DummyModem) -> None:
    link = ModemLink(read_smsdrc(modem.smsdrc))
    await link.publish(f"sms/{DOC1}/a1", b"phone off for days")
    await sent(modem, 1)
    modem.report(DOC1, "Pending")  # the network keeps trying
    await eventually(lambda: not any((modem.root / "inbox").glob("IN*")), timeout=30, what="pending report read")
    assert link.reports() == []
    modem.report(DOC1, "Failed")
    [failed] = await collect(link, 1, "failed")
    assert failed.topic == f"sms/{DOC1}/a1" and failed.state == "failed"
    assert "could not deliver" in failed.reason


def test_status_report_file_as_the_daemon_writes_it(tmp_path: Path) -> None:
    """A report file copied from what gammu-smsd 1.42 wrote into its inbox in a run with the
    dummy phone (the tests above go through the daemon; this pins the format read)."""
    path = tmp_path / "IN20261205_121530_00_+8613800000001_00.txt"
    path.write_text(
        "[SMSBackup000]\n; Delivered\nPDU = Status_Report\nDateTime = 20261205T121530Z\nState = UnRead\n"
        'Number = "+8613800000001"\nNumberUnicode = 002B0038003600310033003800300030003000300030003000300031\n'
        'Name = ""\nNameUnicode = \nText00 = 00440065006C006900760065007200650064\n'
        "Coding = Default_No_Compression\nFolder = 1\nLength = 9\nClass = -1\nReplySMSC = False\n"
        "RejectDuplicates = False\nReplaceMessage = 0\nMessageReference = 255\n\n"
    )
    report = read_status_report(path)
    assert report is not None
    assert (report.number, report.status, report.reference) == ("+8613800000001", "Delivered", 255)


async def test_an_sms_the_daemon_gave_up_on_is_failed(modem: DummyModem) -> None:
    modem.stop()  # the SMS stays in the outbox; the test moves it to error/ as the daemon would
    link = ModemLink(read_smsdrc(modem.smsdrc))
    await link.publish(f"sms/{DOC1}/a1", b"no credit")
    [handed] = list((modem.root / "outbox").iterdir())
    assert link.reports() == []
    handed.rename(modem.root / "error" / handed.name)
    assert link.reports() == [Report(f"sms/{DOC1}/a1", "failed", GAVE_UP)]
    assert link.reports() == []
