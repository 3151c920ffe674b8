"""Chaos rows k-n, quick variants (`just chaos --quick --only klmn`): power cuts instead of
kill -9. The agent's data directory is on the power-cut file system (``devtools.powercut``: a
real FUSE mount that drops whatever was not fsynced, torn prefixes kept at half the cuts);
each cut SIGKILLs the agent, drops the unsynced writes, remounts, and the agent starts again.
Rows: an MQTT SOS stream, a dongle SOS stream (the MicroPython dongle firmware on a pty),
responder acknowledgements and resolves, and policy installs. Each test starts its own
brokers (the shipped layout) and a real gateway; nothing is mocked.
"""

from __future__ import annotations

import pytest

from devtools import chaos
from devtools.chaos.command_kills import command_kills
from devtools.chaos.crash import PowerCut
from devtools.chaos.dongle_kills import dongle_kills
from devtools.chaos.faults import agent_kills
from devtools.chaos.policy_cuts import policy_cuts
from devtools.mosquitto import mosquitto_binary
from devtools.powercut import fuse_missing
from hardware.hil.procs import micropython_binary

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.skipif(mosquitto_binary() is None, reason="the chaos suite needs a real Mosquitto"),
    pytest.mark.skipif(fuse_missing() is not None, reason=f"no FUSE mount for the power-cut FS: {fuse_missing()}"),
]

QUICK = chaos.plan(quick=True, kills=None)


def check(row: chaos.Row, cuts: int) -> None:
    assert row.ok, row.failures
    assert row.sent > 0, row
    assert row.lost == 0, row
    assert row.injections == cuts, row
    # the cuts really went through the power-cut FS and dropped unsynced data
    fs_note = next(n for n in row.notes if n.startswith("power-cut FS:"))
    assert fs_note.startswith(f"power-cut FS: {cuts} cuts discarded"), fs_note
    assert " 0 unsynced bytes" not in fs_note, fs_note


@pytest.mark.chaos_row("k")
@pytest.mark.timeout(120)
async def test_power_cuts_during_mqtt_sos_stream_lose_no_acknowledged_sos() -> None:
    row = await agent_kills(QUICK.cuts_sos, seed=7, crash=PowerCut(7))
    check(row, QUICK.cuts_sos)
    assert any(n.startswith(f"integrity ok after each of {QUICK.cuts_sos} cuts") for n in row.notes), row.notes


@pytest.mark.chaos_row("l")
@pytest.mark.timeout(120)
@pytest.mark.skipif(micropython_binary() is None, reason="micropython unix port not installed")
async def test_power_cuts_during_dongle_sos_stream_one_alert_per_acked_frame() -> None:
    row = await dongle_kills(QUICK.cuts_dongle, seed=7, crash=PowerCut(7))
    check(row, QUICK.cuts_dongle)
    assert row.duplicates == 0, row  # an ACKed frame alerted twice
    assert row.delivered == row.sent, row


@pytest.mark.chaos_row("m")
@pytest.mark.timeout(120)
async def test_power_cuts_during_responder_acks_every_accepted_ack_is_seen_through() -> None:
    row = await command_kills(QUICK.cuts_commands, seed=7, crash=PowerCut(7))
    check(row, QUICK.cuts_commands)
    assert row.delivered == row.sent, row
    assert not any("two msg_ids" in f or "two alert_ids" in f for f in row.failures)


@pytest.mark.chaos_row("n")
@pytest.mark.timeout(120)
async def test_power_cuts_during_policy_installs_active_policy_is_never_older_than_acked() -> None:
    row = await policy_cuts(QUICK.cuts_policy, seed=7, crash=PowerCut(7))
    check(row, QUICK.cuts_policy)
    published = next(n for n in row.notes if n.startswith("v1..v"))
    assert not published.startswith("v1..v0 "), published  # bundles were installed
    assert any(n.startswith(f"active = last acknowledged after each of {QUICK.cuts_policy}") for n in row.notes)
