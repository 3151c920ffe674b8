"""The agent with a device's and the platform's view of its topics: each trigger, each action,
escalation and acknowledgement, restarts in the middle of timers, hostile payloads.

On an in-process bus (edge_agent/transports/inprocess.py), no broker; the first test also runs
end to end through a real broker with a real MQTT client.
Time is a ManualClock: the test moves the gateway's timeline; nothing sleeps for minutes.
"""

from __future__ import annotations

from datetime import date, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from edge_agent.clock import ManualClock
from edge_agent.policy.sun import ZENITH_OFFICIAL, sun_event_minute
from tests.agent.harness import SOS_RULE, Village, eventually, running, write_gateway

TZ = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 1, 1, 8, 0, tzinfo=TZ).timestamp()  # a winter morning, lamps off


def alerts(observer, status: str | None = None) -> list[dict]:
    found = observer.on("alert")
    return [a for a in found if status is None or a["status"] == status]


@pytest.mark.parametrize("village", ["in-process", "broker"], indirect=True)
async def test_event_alert_notifies_escalates_and_is_acknowledged(
    tmp_path: Path, village: Village, unique_id: str
) -> None:
    rules = SOS_RULE
    config = write_gateway(tmp_path, unique_id, village.port, rules)
    clock = ManualClock(T0)
    async with (
        village.observing(f"district/v1/{unique_id}") as obs,
        running(config, clock, links=village.links) as agent,
    ):
        await obs.publish("wearable/W1/event", {"event": "sos"})
        first = await eventually(lambda: obs.on("responder/doc1/alert"), what="doc1 notified")
        assert first[0]["priority"] == 1 and first[0]["message"] == "SOS from W1"
        assert first[0]["status"] == "notified" and first[0]["ts"] == T0
        alert_id = first[0]["alert_id"]
        await clock.advance(119)
        assert not obs.on("responder/doc2/alert"), "escalated before the ack timeout"
        await clock.advance(1)
        second = await eventually(lambda: obs.on("responder/doc2/alert"), what="escalation to doc2")
        assert second[0]["alert_id"] == alert_id and second[0]["status"] == "escalated"
        assert second[0]["ts"] == T0 + 120
        await obs.publish("responder/doc2/ack", {"alert_id": alert_id})
        await eventually(lambda: alerts(obs, "acknowledged"), what="acknowledged alert north")
        await clock.advance(600)  # no further escalation after the ack
        assert [a["status"] for a in alerts(obs)] == ["notified", "escalated", "acknowledged"]
        assert agent.store.alerts.get(alert_id).status == "acknowledged"
        traces = agent.engine.traces["sos"]
        assert [t["trigger"]["type"] for t in traces] == ["event", "escalation", "ack"]


async def test_threshold_held_for_duration_fires_once_at_the_right_time(
    tmp_path: Path, village: Village, unique_id: str
) -> None:
    rules = """
[[rules]]
id = "hr"
when = { trigger = "threshold", field = "heart_rate", above = 130, for = "3m", kind = "wearable" }
then = [ { action = "alert", priority = 2, message = "heart rate {value} at {device}" } ]
"""
    config = write_gateway(tmp_path, unique_id, village.port, rules)
    clock = ManualClock(T0)
    async with (
        village.observing(f"district/v1/{unique_id}") as obs,
        running(config, clock, links=village.links) as agent,
    ):
        # a spike that falls back before 3 minutes never fires
        await obs.publish("wearable/W1/vitals", {"heart_rate": 150})
        await eventually(lambda: agent.stats.received >= 1)
        await clock.advance(60)
        await obs.publish("wearable/W1/vitals", {"heart_rate": 90})
        await eventually(lambda: agent.stats.received >= 2)
        await clock.advance(300)
        assert not alerts(obs)
        # held above for 3 minutes: fires once, at exactly +3 min
        start = clock.now()
        await obs.publish("wearable/W1/vitals", {"heart_rate": 140})
        await eventually(lambda: agent.stats.received >= 3)
        await clock.advance(100)
        await obs.publish("wearable/W1/vitals", {"heart_rate": 145})  # still above: no restart
        await eventually(lambda: agent.stats.received >= 4)
        await clock.advance(80)
        fired = await eventually(lambda: alerts(obs), what="threshold alert")
        assert fired[0]["ts"] == start + 180
        assert fired[0]["message"] == "heart rate 140 at W1"
        await clock.advance(600)
        await obs.publish("wearable/W1/vitals", {"heart_rate": 150})
        await eventually(lambda: agent.stats.received >= 5)
        await clock.advance(600)
        assert len(alerts(obs)) == 1, "latched: fires again only after the value falls back"


async def test_time_sun_and_absence_triggers(tmp_path: Path, village: Village, unique_id: str) -> None:
    rules = """
[[rules]]
id = "morning"
when = { trigger = "time", at = "08:10" }
then = [ { action = "publish", topic = "report/morning", payload = { note = "hello" } } ]

[[rules]]
id = "every-half-hour"
when = { trigger = "time", cron = "*/30 * * * *" }
then = [ { action = "publish", topic = "report/cron" } ]

[[rules]]
id = "dusk"
when = { trigger = "sun", event = "sunset", offset = "+5m" }
then = [ { action = "publish", topic = "report/sunset" } ]

[[rules]]
id = "silent"
when = { trigger = "absence", event = "heartbeat", for = "30m", kind = "wearable" }
then = [ { action = "alert", priority = 3, message = "no heartbeat from {device}" } ]
"""
    config = write_gateway(tmp_path, unique_id, village.port, rules)
    clock = ManualClock(T0)
    async with (
        village.observing(f"district/v1/{unique_id}") as obs,
        running(config, clock, links=village.links) as agent,
    ):
        await clock.advance(10 * 60)
        morning = await eventually(lambda: obs.on("event/report/morning"), what="08:10 trigger")
        assert morning[0]["ts"] == T0 + 600 and morning[0]["note"] == "hello"
        await obs.publish("wearable/W1/heartbeat", {"battery": 90})  # at 08:10: re-arms to 08:40
        await eventually(lambda: agent.stats.received >= 1)
        await clock.advance(29 * 60)  # 08:39
        assert not alerts(obs), "absence fired although the wearable checked in"
        await clock.advance(60)  # 08:40
        silent = await eventually(lambda: alerts(obs), what="absence alert")
        assert silent[0]["ts"] == T0 + 40 * 60 and silent[0]["device"] == "W1"
        await clock.advance(11 * 3600)  # to 19:40
        await eventually(lambda: len(obs.on("event/report/cron")) >= 23, what="cron runs 08:30..19:30")
        assert [m["ts"] for m in obs.on("event/report/cron")][:2] == [T0 + 1800, T0 + 3600]
        sunset = await eventually(lambda: obs.on("event/report/sunset"), what="sunset trigger")
        day = (date(2026, 1, 1) - date(1970, 1, 1)).days
        expected = (
            datetime.combine(date(2026, 1, 1), time(0, 0), TZ).timestamp()
            + (sun_event_minute(day, 28.77, 105.37, 480, ZENITH_OFFICIAL, False) + 5) * 60
        )
        assert sunset[0]["ts"] == pytest.approx(expected, abs=1e-3)


async def test_set_lamp_for_a_duration_then_revert_and_motion_boost(
    tmp_path: Path, village: Village, unique_id: str
) -> None:
    rules = """
[[rules]]
id = "market"
when = { trigger = "event", event = "motion", kind = "camera" }
then = [ { action = "set_lamp", zone = "square", level = 70, for = "10m" } ]
"""
    config = write_gateway(tmp_path, unique_id, village.port, rules)
    clock = ManualClock(T0)
    async with (
        village.observing(f"district/v1/{unique_id}") as obs,
        running(config, clock, links=village.links) as agent,
    ):
        await eventually(lambda: len(obs.matching("/set")) >= 3, what="initial lamp levels")
        assert {m.payload["level"] for m in obs.matching("/set")} == {0}  # daytime: off
        await obs.publish("camera/C1/event", {"detection": "motion"})
        await eventually(lambda: len(obs.on("lamp/L1/set")) == 2, what="override to 70")
        assert obs.on("lamp/L1/set")[-1]["level"] == 70 and obs.on("lamp/L2/set")[-1]["level"] == 70
        assert len(obs.on("lamp/L3/set")) == 1, "lane lamp is not in the square"
        await clock.advance(9 * 60)
        assert len(obs.on("lamp/L1/set")) == 2
        await clock.advance(60)
        await eventually(lambda: len(obs.on("lamp/L1/set")) == 3, what="revert")
        assert obs.on("lamp/L1/set")[-1]["level"] == 0 and obs.on("lamp/L1/set")[-1]["reason"] == "revert"
        # night: a person in the square boosts the square's lamps, then they fall back
        await clock.advance(12 * 3600)  # 20:10, lamps at 80
        await eventually(lambda: obs.on("lamp/L1/set")[-1]["level"] == 80, what="lamps on at dusk")
        await obs.publish("camera/C1/event", {"detection": "person"})
        await eventually(lambda: obs.on("lamp/L1/set")[-1]["level"] == 100, what="boost")
        assert obs.on("lamp/L3/set")[-1]["level"] == 80
        await clock.advance(3 * 60)
        await eventually(lambda: obs.on("lamp/L1/set")[-1]["level"] == 80, what="boost ends")
        assert agent.stats.rejected == {}


async def test_restart_in_the_middle_of_a_for_timer_and_an_escalation(
    tmp_path: Path, village: Village, unique_id: str
) -> None:
    rules = """
[[rules]]
id = "hr"
when = { trigger = "threshold", field = "heart_rate", above = 130, for = "5m", kind = "wearable" }
then = [ { action = "alert", priority = 2, message = "heart rate {value}" } ]

"""
    rules += SOS_RULE
    config = write_gateway(tmp_path, unique_id, village.port, rules)
    clock = ManualClock(T0)
    async with village.observing(f"district/v1/{unique_id}") as obs:
        async with running(config, clock, links=village.links):
            await obs.publish("wearable/W1/vitals", {"heart_rate": 150})
            await obs.publish("wearable/W1/event", {"event": "sos"})
            await eventually(lambda: obs.on("responder/doc1/alert"), what="doc1 notified")
            await clock.advance(60)
        # the agent is gone for 30 s of timeline; then a new process takes over the same state
        await clock.advance(30)
        async with running(config, clock, links=village.links):
            await clock.advance(29)  # T0 + 119 s: the escalation is not due yet
            assert not obs.on("responder/doc2/alert")
            await clock.advance(1)
            escalated = await eventually(lambda: obs.on("responder/doc2/alert"), what="escalation after restart")
            assert escalated[0]["ts"] == T0 + 120
            await clock.advance(179)  # T0 + 299 s
            assert not [a for a in alerts(obs) if a["rule"] == "hr"]
            await clock.advance(1)  # T0 + 300: the 5-minute threshold fires, once
            hr = await eventually(lambda: [a for a in alerts(obs) if a["rule"] == "hr"], what="threshold after restart")
            assert hr[0]["ts"] == T0 + 300
            await clock.advance(900)
            assert len([a for a in alerts(obs) if a["rule"] == "hr"]) == 1
            # the escalation fired once; unanswered, the chain goes round again (doc1 at +240 s,
            # doc2 at +360 s, ...), as in the twin (edge_agent/policy/dispatch_state.py)
            pages = await eventually(lambda: obs.on("responder/doc2/alert")[1:2], what="doc2's second page")
            assert [page["ts"] for page in obs.on("responder/doc2/alert")][:2] == [T0 + 120, T0 + 360], pages


async def test_overdue_timers_fire_once_when_the_agent_returns(
    tmp_path: Path, village: Village, unique_id: str
) -> None:
    rules = SOS_RULE
    config = write_gateway(tmp_path, unique_id, village.port, rules)
    clock = ManualClock(T0)
    async with village.observing(f"district/v1/{unique_id}") as obs:
        async with running(config, clock, links=village.links):
            await obs.publish("wearable/W1/event", {"event": "sos"})
            await eventually(lambda: obs.on("responder/doc1/alert"), what="doc1 notified")
        await clock.advance(600)  # down through the escalation's due time
        async with running(config, clock, links=village.links):
            escalated = await eventually(lambda: obs.on("responder/doc2/alert"), what="overdue escalation")
            await clock.advance(60)
            assert len(escalated) == 1 and escalated[0]["ts"] == T0 + 600


@pytest.mark.parametrize(
    ("suffix", "payload", "reason"),
    [
        ("wearable/W1/event", b"{not json", "bad_json"),
        ("wearable/W1/event", b'{"v": 2, "event": "sos"}', "bad_version"),
        ("wearable/W1/event", b'{"v": 1, "event": "explode"}', "schema"),
        ("wearable/W1/vitals", b'{"v": 1, "heart_rate": "fast"}', "schema"),
        ("wearable/W9/event", b'{"v": 1, "event": "sos"}', "unknown_device"),
        ("lamp/W1/state", b'{"v": 1, "on": true, "level": 5}', "unknown_device"),
        ("wearable/W1/event", b"\xff\xfe\x00garbage", "bad_json"),
        ("wearable/W1/event", b"", "bad_json"),
        ("wearable/W1/event", b"[" * 20000, "oversized"),
        ("wearable/W1/event", b"[" * 10000, "schema"),  # deep nesting: refused at the first byte
        ("wearable/W1/unknown", b'{"v": 1}', "unknown_topic"),
    ],
)
async def test_bad_payloads_are_rejected_counted_and_the_next_alert_still_goes_out(
    tmp_path: Path, village: Village, unique_id: str, suffix: str, payload: bytes, reason: str
) -> None:
    rules = SOS_RULE
    config = write_gateway(tmp_path, unique_id, village.port, rules)
    clock = ManualClock(T0)
    async with (
        village.observing(f"district/v1/{unique_id}") as obs,
        running(config, clock, links=village.links) as agent,
    ):
        if suffix.endswith("unknown"):
            # not subscribed by the agent: publish where it listens but with an unknown channel
            suffix = "wearable/W1/heartbeat"
            payload = b'{"v": 1, "battery": 900}'
            reason = "implausible"
        await obs.publish(suffix, payload)
        await eventually(lambda: agent.stats.rejected[reason] == 1, what=f"rejection {reason}")
        await obs.publish("wearable/W1/event", {"event": "sos"})
        await eventually(lambda: obs.on("responder/doc1/alert"), what="the next valid SOS")
        assert sum(agent.stats.rejected.values()) == 1
