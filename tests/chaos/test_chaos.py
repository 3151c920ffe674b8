"""The chaos suite's short variants (`just chaos --quick`), through the same functions.

Each test starts its own Mosquitto brokers on free loopback ports and a real gateway process;
figures are printed by `just chaos`, never asserted here except as generous bounds. Each test
names the rows of `just chaos` it runs (``chaos_row``): tests/test_readme.py checks that every
row of the README's chaos table is run here or in the other tests/chaos modules.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from devtools import chaos
from devtools.mosquitto import mosquitto_binary

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.skipif(mosquitto_binary() is None, reason="the chaos suite needs a real Mosquitto"),
]

QUICK = chaos.plan(quick=True, kills=None)


def check(row: chaos.Row) -> None:
    assert row.sent > 0, row
    assert row.lost == 0, row
    assert not row.failures, row.failures


@pytest.mark.chaos_row("a")
@pytest.mark.timeout(120)
async def test_agent_kill_9_loses_no_acknowledged_sos() -> None:
    row = await chaos.agent_kills(QUICK.kills, seed=7)
    check(row)
    assert row.injections == QUICK.kills
    assert any(note.startswith("integrity ok") for note in row.notes)


@pytest.mark.chaos_row("b")
@pytest.mark.timeout(120)
@pytest.mark.parametrize("persistence", [False, True], ids=["no-persistence", "persistence"])
async def test_north_broker_kill_and_restart(persistence: bool) -> None:
    row = await chaos.broker_restarts(2, persistence=persistence, seed=3)
    check(row)
    assert row.injections == 2


@pytest.mark.chaos_row("c")
@pytest.mark.timeout(120)
async def test_uplink_outage_no_gaps_alerts_first() -> None:
    # a shorter outage than `just chaos --quick` (5 timeline minutes at x60 = 5 s real)
    row = await chaos.uplink_outage(300.0, speed=60.0, around_s=1.0)
    check(row)
    assert any("alerts all before" in note for note in row.notes), row.notes
    assert row.first_alert_s is not None and row.first_alert_s < 30.0  # target 5 s: see `just chaos`


@pytest.mark.chaos_row("d")
@pytest.mark.timeout(120)
async def test_connection_dropped_after_publish_before_puback() -> None:
    row = await chaos.publish_drops(10)
    check(row)
    assert row.injections == 10
    assert row.duplicates >= 1  # the broker had the message: the retry is a duplicate, dropped by id


@pytest.mark.chaos_row("h")
@pytest.mark.timeout(90)
async def test_denied_publish_is_kept_alarmed_and_delivered_after_the_acl_fix() -> None:
    """The city broker's ACL lacks the lamp telemetry grant: every SOS still arrives, the
    refused telemetry stays in the outbox (not_authorized) with a north_refused alarm, and is
    delivered once the ACL is fixed (the 300 s refused-retry of the agent's clock, at x60)."""
    from devtools.chaos.refusals import denied_publish

    row = await denied_publish(stream_s=QUICK.denied_s)
    check(row)
    assert row.injections == 1
    assert any("parked as not_authorized" in note for note in row.notes), row.notes
    assert row.drain_s is not None and row.drain_s < 30.0  # 5 s retry + reconnect


@pytest.mark.chaos_row("e")
@pytest.mark.timeout(60)
async def test_serial_port_vanishing_mid_frame() -> None:
    row = await chaos.serial_vanish(3)
    check(row)
    assert row.delivered == row.sent == 3


@pytest.mark.chaos_row("i")
@pytest.mark.timeout(120)
async def test_store_write_locked_nothing_acknowledged_everything_applied_once_after() -> None:
    """Another process holds ``BEGIN EXCLUSIVE`` on the agent's database for a few seconds (the
    full run: 60 s) during an SOS stream: the storage alarm reaches the village broker, and every
    SOS the hub got a PUBACK for reaches the platform once the lock is gone."""
    from devtools.chaos.refusals import locked_store

    row = await locked_store(QUICK.lock_s)
    check(row)
    assert row.injections == 1
    assert row.delivered == row.sent, row
    assert any(note.startswith("storage alarm reached the village broker") for note in row.notes), row.notes


# ----- the two link bugs the suite found (edge_agent/transports/mqtt_client.py) ---------------------
@pytest.mark.timeout(60)
async def test_link_fails_fast_when_dropped_before_puback_or_connack() -> None:
    """A publish whose connection dies before the PUBACK fails at once (it waited for
    publish_timeout, 10 s, stalling the outbox), and so does a connect closed before CONNACK."""
    import asyncio
    import time

    from devtools.flaky_proxy import FlakyProxy
    from devtools.mosquitto import MosquittoProcess
    from edge_agent.errors import TransportError
    from edge_agent.transports.mqtt import MqttLink
    from edge_agent.transports.mqtt_settings import LinkSettings

    async def ignore(topic: str, payload: bytes) -> bool:
        return True

    with MosquittoProcess() as broker:
        async with FlakyProxy(broker.port) as proxy:
            settings = LinkSettings("127.0.0.1", proxy.port, "chaos-link", reconnect_min=0.05, reconnect_max=0.1)
            link = MqttLink("north", settings, [], ignore)
            task = asyncio.create_task(link.run())
            try:
                await link.wait_connected(10)
                proxy.drop_after_publishes(1, "chaos/x")
                started = time.monotonic()
                with pytest.raises(TransportError):
                    await link.publish("chaos/x", b"1")
                assert time.monotonic() - started < 5.0  # was publish_timeout (10 s)
                proxy.cut()
                await asyncio.sleep(0.5)  # a few refused attempts
                failures = link.failures
                proxy.restore()
                started = time.monotonic()
                await link.wait_connected(10)
                assert time.monotonic() - started < 5.0  # each refused attempt cost 10 s before
                assert failures >= 2, link.last_error
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


# ----- what `just chaos` records (bench-results/chaos.json, the README's chaos table) ---------------
@pytest.mark.timeout(120)
def test_just_chaos_only_e_records_its_row_and_keeps_the_others(tmp_path: Path) -> None:
    """`just chaos --quick --only e` (the serial row: no broker, a few seconds) merges its row into
    an existing results file holding rows a and e of an earlier full run: a is kept, e replaced by
    the quick run, with its command, variant, date and the machine's load."""
    from devtools.chaos import record
    from devtools.chaos.cli import main

    results = tmp_path / "chaos.json"
    earlier = [
        record.Record(
            letter=x,
            fault=f"earlier {x}",
            injections=1,
            sent=1,
            delivered=1,
            lost=0,
            duplicates=0,
            ok=True,
            variant="full",
            command="just chaos",
            measured_at="2026-01-01 00:00 UTC",
        )
        for x in "ae"
    ]
    record.write(earlier, results)
    assert main(["--quick", "--only", "e", "--results", str(results)]) == 0
    rows = {r.letter: r for r in record.read(results)}
    assert rows["a"] == earlier[0]
    e = rows["e"]
    assert (e.variant, e.command, e.ok, e.lost) == (
        "quick",
        "just chaos --quick --only e --results " + str(results),
        True,
        0,
    )
    assert e.injections == QUICK.cuts and e.sent == e.delivered > 0
    assert e.measured_at > "2026-01-01 00:00 UTC" and len(e.machine["loadavg"]) == 3
