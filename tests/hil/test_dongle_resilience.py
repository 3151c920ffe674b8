"""Wearable dongle resilience under the MicroPython unix port: a hung main loop stops feeding
the watchdog, the dongle reboots (the harness's supervisor restarts it on the same line and
flash), says HELLO with a new boot nonce and serves again; an SOS not yet ACKed at a power cut
is sent again after the reboot with its old seq, and the gateway's duplicate record (the real
``store.inbox.first_dongle_frame``) keeps it to one alert, for a cut at every step of the save."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.store.db import Store
from edge_agent.transports.dongle_link import DongleLink, DongleSettings
from edge_agent.transports.dongle_receiver import DongleMessage
from hardware.hil.procs import micropython_binary
from tests.agent.harness import eventually

from .conftest import DongleTarget, emulated_dongle

pytestmark = [pytest.mark.hil, pytest.mark.timeout(60)]

SAVE_STEPS = 7  # filesystem operations per save (hardware/firmware/common/store.py STEPS)


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


async def idle(target: DongleTarget, seconds: float = 10.0) -> None:
    """Until the dongle has nothing in flight or queued (its ``stats`` line says idle=1)."""
    assert target.process is not None
    proc = target.process
    async with asyncio.timeout(seconds):
        for _ in range(1000):
            before = proc.log().count("stats ")
            os.write(target.radio, b"stats\n")
            await eventually(lambda n=before: proc.log().count("stats ") > n, timeout=seconds, what="stats")
            if " idle=1 " in [x for x in proc.log().splitlines() if x.startswith("stats ")][-1]:
                return


class Gateway:
    """The gateway's side of a dongle, from its real parts: a ``DongleLink`` and the agent's
    duplicate record (``store.inbox.first_dongle_frame``, the same call the agent makes in the
    transaction of the alert). ``alerts[device_id]`` counts the frames that would raise one."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.alerts: dict[int, int] = {}
        self.hellos: list[str] = []
        self.delivered: list[DongleMessage] = []
        self.ack = True  # False: a gateway that crashes after the commit, before the ACK

    async def serve(self, link: DongleLink) -> None:
        while True:
            msg = await link.get()
            self.delivered.append(msg)
            if msg.kind == "hello":
                self.hellos.append(msg.boot)
            elif self.store.inbox.first_dongle_frame(msg.boot, msg.seq, 0.0):
                self.alerts[msg.device_id] = self.alerts.get(msg.device_id, 0) + 1
            if self.ack:
                link.ack(msg)

    async def wait_hellos(self, n: int, seconds: float = 15.0) -> None:
        await eventually(lambda: len(self.hellos) >= n, timeout=seconds, what=f"{n} HELLOs")


async def test_an_sos_in_flight_at_a_power_cut_reaches_a_restarted_gateway_once(
    supervised_dongle: DongleTarget, tmp_path: Path
) -> None:
    """The gateway commits the SOS and crashes before its ACK; the dongle loses power. After
    both are back the dongle sends the SOS again, before its new HELLO, with the seq it had:
    the restarted gateway (its link constructed with the committed nonce) names it (old boot,
    seq), finds it recorded and acks it without a second alert."""
    target = supervised_dongle
    proc = target.process
    assert proc is not None
    store = Store(tmp_path / "gw.db")
    gw = Gateway(store)
    async with DongleLink(DongleSettings(target.port, reopen_max=0.2)) as link:
        task = asyncio.create_task(gw.serve(link))
        await gw.wait_hellos(1)
        gw.ack = False  # the gateway will commit the next frame and crash before acking it
        os.write(target.radio, b"sos 7 40\n")
        await eventually(lambda: gw.alerts.get(7) == 1, timeout=10, what="SOS 7")
        sos = gw.delivered[-1]
        task.cancel()
    boot1 = gw.hellos[0]
    assert (sos.kind, sos.seq, sos.boot) == ("sos", 2, boot1)
    os.write(target.radio, b"power\n")  # the dongle loses power with the SOS unACKed
    await asyncio.to_thread(proc.wait_boots, 2)
    gw.ack = True
    async with DongleLink(DongleSettings(target.port, reopen_max=0.2, initial_boot=boot1)) as link:
        task = asyncio.create_task(gw.serve(link))
        await gw.wait_hellos(2)  # the new boot's HELLO comes after the resent SOS
        os.write(target.radio, b"sos 8 41\n")
        await eventually(lambda: gw.alerts.get(8) == 1, timeout=10, what="SOS 8")
        task.cancel()
    resent = [m for m in gw.delivered if m.kind == "sos" and m.device_id == 7]
    assert [(m.boot, m.seq) for m in resent] == [(boot1, 2), (boot1, 2)]  # the same frame twice
    assert gw.alerts == {7: 1, 8: 1}  # ... and one alert
    assert gw.hellos[1] != boot1
    assert [(m.kind, m.seq, m.boot) for m in gw.delivered[-2:]] == [
        ("hello", 1, gw.hellos[1]),
        ("sos", 2, gw.hellos[1]),
    ]
    assert "resend seq=2 boot=" + boot1 in proc.log()
    store.close()


@pytest.mark.parametrize("which", ["first-send", "after-ack"])
async def test_power_cut_at_every_step_of_the_queue_save(
    supervised_dongle: DongleTarget, tmp_path: Path, which: str
) -> None:
    """A press is saved with its seq before the dongle first sends it, and saved off the
    queue after its ACK; a power cut before each filesystem step of either save
    (common/store.py, STEPS = 7) never doubles an alert. After the ACK: exactly one alert,
    whatever the step. Before the first send: the gateway has seen nothing; the press is
    sent again after the reboot once its new copy is complete (a cut from step 5 on: the CRC
    is written), else it was never the dongle's (a real radio ACKs the wearable after the save)."""
    target = supervised_dongle
    proc = target.process
    assert proc is not None
    store = Store(tmp_path / "gw.db")
    gw = Gateway(store)
    async with DongleLink(DongleSettings(target.port, reopen_max=0.2)) as link:
        task = asyncio.create_task(gw.serve(link))
        await gw.wait_hellos(1)
        await idle(target)
        for step in range(1, SAVE_STEPS + 1):
            boots = proc.boots()
            skip = 0 if which == "first-send" else 1
            os.write(target.radio, f"cut {step} {skip}\nsos {step} 50\n".encode())
            await asyncio.to_thread(proc.wait_boots, boots + 1)
            await gw.wait_hellos(boots + 1)  # a resent SOS precedes the new boot's HELLO
            await idle(target)  # its HELLO's ACK has reached the dongle: the next save is ours
            if which == "after-ack" or step >= 5:
                assert gw.alerts.get(step) == 1, (step, gw.alerts)
            else:
                assert gw.alerts.get(step) is None, (step, gw.alerts)
            assert f"power cut at point {step}" in proc.log()
        os.write(target.radio, b"sos 99 50\n")  # the dongle still serves, the queue is sane
        await eventually(lambda: gw.alerts.get(99) == 1, timeout=10, what="SOS 99")
        task.cancel()
    assert max(gw.alerts.values()) == 1
    assert len(set(gw.hellos)) == SAVE_STEPS + 1
    store.close()
