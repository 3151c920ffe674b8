"""Wearable dongle watchdog under the MicroPython unix port: a hung main loop stops feeding the
watchdog, the dongle reboots (the harness's supervisor restarts it on the same line), says
HELLO with a new boot nonce, and serves again; frames it held in RAM are gone, nothing from
the previous boot is retransmitted."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.transports.dongle_link import DongleLink, DongleMessage, DongleSettings
from hardware.hil.procs import micropython_binary

from .conftest import DongleTarget, emulated_dongle

pytestmark = [pytest.mark.hil, pytest.mark.timeout(60)]


@pytest.fixture
def supervised_dongle(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DongleTarget]:
    """The simulated dongle under a supervisor: a watchdog reset (kill -9) reboots it."""
    if request.config.getoption("--dongle-port"):
        pytest.skip("hangs are injected on the emulated dongle only")
    if micropython_binary() is None:
        pytest.skip("micropython unix port not installed")
    with emulated_dongle(tmp_path, supervise=True) as target:
        yield target


async def next_msg(link: DongleLink, seconds: float = 10.0) -> DongleMessage:
    msg = await asyncio.wait_for(link.get(), seconds)
    assert link.ack(msg)
    return msg


async def test_watchdog_reboots_a_hung_dongle_with_a_new_nonce(supervised_dongle: DongleTarget) -> None:
    target = supervised_dongle
    proc = target.process
    assert proc is not None
    async with DongleLink(DongleSettings(target.port, reopen_max=0.2)) as link:
        hello1 = await next_msg(link)
        assert hello1.kind == "hello"
        os.write(target.radio, b"sos 1 50\n")
        sos1 = await next_msg(link)
        assert (sos1.kind, sos1.device_id, sos1.boot) == ("sos", 1, hello1.boot)
        await asyncio.sleep(0.2)  # let the ACK reach the dongle
        assert proc.boots() == 1
        os.write(target.radio, b"hang\n")
        await asyncio.to_thread(proc.wait_boots, 2, 15.0)
        assert "watchdog reset" in proc.log()
        hello2 = await next_msg(link)  # the rebooted dongle's first frame
        assert hello2.kind == "hello"
        assert hello2.boot != hello1.boot  # a new boot nonce on the line
        assert hello2.seq == 1
        os.write(target.radio, b"sos 2 60\n")  # pressed after the reboot
        sos2 = await next_msg(link)
        assert (sos2.kind, sos2.device_id, sos2.boot) == ("sos", 2, hello2.boot)
        assert sos2.data == {"battery": 60}
        assert sos2.seq == 2
        os.write(target.radio, b"hb 3 70 -50\n")
        hb = await next_msg(link)
        assert (hb.kind, hb.device_id) == ("heartbeat", 3)  # nothing of the old boot came again
    for _ in range(100):  # its ACK is delivered and the dongle lets go of the SOS
        os.write(target.radio, b"stats\n")
        await asyncio.sleep(0.1)
        stats = [x for x in proc.log().splitlines() if x.startswith("stats ")]
        if stats and "acked=3" in stats[-1]:
            break
    assert "acked=3 " in stats[-1]  # HELLO, sos 2, hb 3 of the new boot
    assert proc.boots() == 2
