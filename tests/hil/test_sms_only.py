"""Nothing but the modem: the uplink is down and nobody is on the village LAN, yet an SOS from
the wearable dongle reaches the doctor by SMS and the doctor's reply acknowledges it.

Real parts: the dongle firmware under MicroPython on a pty (or a board with --dongle-port),
Gammu's SMS daemon on its dummy phone. The gateway's own broker is the in-process bus with no
other client on it (the LAN is down), and there is no north link at all.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from devtools.gammu import DummyModem, gammu_smsd_binary
from devtools.gateway_config import POLICY_HEAD, SOS_RULE, write_gateway_config
from edge_agent.clock import ManualClock
from edge_agent.config import load_config
from tests.agent.harness import T0, eventually, in_process_village, running
from tests.hil.conftest import DongleTarget

pytestmark = [
    pytest.mark.hil,
    pytest.mark.timeout(90),
    pytest.mark.skipif(gammu_smsd_binary() is None, reason="gammu-smsd is not installed (apt-get install gammu-smsd)"),
]

DOC1, DOC2 = "+8613800000001", "+8613800000002"


async def test_with_the_uplink_and_the_lan_down_an_sos_reaches_the_doctor_by_sms_and_the_reply_stops_it(
    dongle_target: DongleTarget, tmp_path: Path
) -> None:
    with DummyModem(tmp_path / "modem") as modem:
        village = in_process_village()  # the gateway's own broker; no device and no phone on it
        path = write_gateway_config(
            tmp_path,
            "alone-gw",
            policy_text=POLICY_HEAD + SOS_RULE,
            south_url=f"mqtt://127.0.0.1:{village.port}",
            north_url="none",
            lamps=(),
            cameras=(),
            wearables=[{"id": "grandma-wu", "link": "dongle", "radio_id": 101}],
            dongle={"port": dongle_target.port},
            extra={
                "responders": [
                    {"id": "doc1", "role": "village_doctor", "phone": DOC1},
                    {"id": "doc2", "role": "township_doctor", "phone": DOC2},
                ],
                "modem": {"smsdrc": str(modem.smsdrc), "poll": 0.1},
            },
        )
        clock = ManualClock(T0)
        async with running(load_config(path), clock, links=village.links) as agent:
            assert agent.north is None
            os.write(dongle_target.radio, b"sos 101 80\n")
            [sms] = await eventually(
                lambda: [s for s in modem.sent() if s.number == DOC1], timeout=30, what="the SMS to doc1"
            )
            assert sms.text.startswith("URGENT grandma-wu: SOS from grandma-wu. Reply 1 ") and len(sms.parts) == 1
            code = re.search(r"Reply 1 ([0-9A-Z]{4}) ", sms.text)
            assert code is not None, sms.text
            modem.receive(DOC1, f"1 {code.group(1)}")
            [alert] = agent.store.alerts.newest()
            await eventually(
                lambda: agent.store.alerts.get(alert.alert_id).status == "acknowledged",
                timeout=30,
                what="acknowledged by the reply",
            )
            await clock.advance(600)
            assert not [s for s in modem.sent() if s.number == DOC2], "the reply stopped the escalation"
            assert agent.store.alerts.get(alert.alert_id).responder == "doc1"
