"""Shadow mode (edge_agent/agent/shadow.py), without a broker: the agent's real intake and timer
loop on a ManualClock, a candidate policy beside the active one, a village night.

What it must show: an identical candidate differs in nothing; a different dimming step gives
exactly the level-minutes the two programs imply; a different responder chain is recorded alert
by alert and step by step; and the active path's outputs are the same bytes with or without a
shadow (random ids aside), even when the candidate fails on every input.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import pytest
from typer.testing import CliRunner

from devtools.gateway_config import DEFAULT_POLICY, POLICY_HEAD, SOS_RULE, write_gateway_config
from edge_agent.agent import topics
from edge_agent.agent.app import Agent
from edge_agent.agent.loops import run_timers
from edge_agent.cli.main import app as cli_app
from edge_agent.clock import ManualClock
from edge_agent.config import GatewayConfig, load_config
from edge_agent.engine import Effect, LampSet
from edge_agent.errors import ConfigError
from edge_agent.models import Event
from edge_agent.policy.shadow_report import ShadowReport, decode_report

TZ = ZoneInfo("Asia/Shanghai")
NIGHT = date(2026, 1, 1)
DUSK = datetime.combine(NIGHT, time(17, 0), TZ).timestamp()
DAWN = datetime.combine(NIGHT + timedelta(days=1), time(8, 0), TZ).timestamp()
GW = "shadow-gw"

DIMMER = DEFAULT_POLICY.replace('{ at = "22:00", level = 50 }', '{ at = "22:00", level = 40 }')
REVERSED_CHAIN = DEFAULT_POLICY.replace(
    'roles = ["village_doctor", "township_doctor"]', 'roles = ["township_doctor", "village_doctor"]'
)


def _gateway(tmp_path: Path, candidate: str | None, days: int = 7) -> GatewayConfig:
    extra: dict[str, Any] = {}
    if candidate is not None:
        (tmp_path / "candidate.toml").write_text(candidate)
        extra["shadow"] = {"policy": "candidate.toml", "days": days}
    path = write_gateway_config(tmp_path, GW, south_url="mqtt://127.0.0.1:1", policy_text=DEFAULT_POLICY, extra=extra)
    return load_config(path)


@contextlib.asynccontextmanager
async def gateway(config: GatewayConfig, clock: ManualClock) -> AsyncIterator[Agent]:
    """The agent's intake, timer loop and shadow task, without links (nothing leaves)."""
    agent = Agent(config, clock)
    await agent._start_engine()
    tasks = [asyncio.create_task(run_timers(agent.context, agent.outbound.apply, shadow=agent.shadow))]
    if agent.shadow is not None:
        tasks.append(asyncio.create_task(agent.shadow.run()))
    await asyncio.sleep(0)
    try:
        yield agent
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if agent.shadow is not None:
            agent.shadow.close()
        agent.store.close()
        agent.delivery.close()


async def minutes_until(clock: ManualClock, until: float) -> None:
    while clock.now() < until:
        await clock.advance(min(60.0, until - clock.now()), settle=4)


def at(hour: int, minute: int = 0) -> float:
    day = NIGHT if hour >= 12 else NIGHT + timedelta(days=1)
    return datetime.combine(day, time(hour, minute), TZ).timestamp()


async def village_night(agent: Agent, clock: ManualClock, effects: list[Effect] | None = None) -> None:
    """Dusk to dawn: a person in the square, an SOS acknowledged after its escalation, a lamp
    report with a fault."""
    if effects is not None:
        agent.on_effect = effects.append
    await minutes_until(clock, at(21, 40))
    agent.handle_event(Event("C1", "camera", "person", clock.now(), "square", None, {"detection": "person"}))
    await minutes_until(clock, at(22, 30))
    agent.handle_event(Event("W1", "wearable", "sos", clock.now(), "lane", None, {"seq": 1}))
    await minutes_until(clock, at(22, 33))
    alert = agent.store.alerts.newest()[0]
    await agent.intake.on_south(
        topics.build(GW, "responder_ack", responder="doc2"), b'{"v":1,"alert_id":"%s"}' % alert.alert_id.encode()
    )
    await minutes_until(clock, at(1, 30))
    state = {"on": True, "level": 30, "faults": 4}
    agent.handle_event(Event("L3", "lamp", "state", clock.now(), "lane", "village", state))
    await minutes_until(clock, DAWN)
    for _ in range(50):
        await asyncio.sleep(0)
    assert agent.shadow is None or not agent.shadow.queue, "the shadow kept up"


async def test_an_identical_candidate_differs_in_nothing(tmp_path: Path) -> None:
    clock = ManualClock(DUSK)
    async with gateway(_gateway(tmp_path, DEFAULT_POLICY), clock) as agent:
        await village_night(agent, clock)
        assert agent.shadow is not None
        report = agent.shadow.report()
    assert [d.day for d in report.days] == ["2026-01-01", "2026-01-02"]
    assert [d.complete for d in report.days] == [True, False]
    for day in report.days:
        assert day.differences == 0, day
        assert day.candidate_errors == 0 and day.dropped == 0
    assert sum(d.minutes for d in report.days) == 15 * 60, "every lighting minute compared"
    assert report.days[0].alerts_both == 1, "the SOS, raised by both"


async def test_a_different_dimming_step_costs_exactly_the_level_minutes_the_programs_imply(tmp_path: Path) -> None:
    active = load_config(write_gateway_config(tmp_path / "a", GW, south_url="mqtt://x:1")).policy
    (tmp_path / "b").mkdir()
    clock = ManualClock(DUSK)
    async with gateway(_gateway(tmp_path / "b", DIMMER), clock) as agent:
        await village_night(agent, clock)
        assert agent.shadow is not None
        report = agent.shadow.report()
        candidate = agent.shadow.engine.policy
    # independently, from the two programs' declarations: from the 22:00 step to the 00:00 step
    declared_a = {s.at: s.level for s in active.programs["village"].steps}
    declared_c = {s.at: s.level for s in candidate.programs["village"].steps}
    assert declared_a["00:00"] == declared_c["00:00"]
    minutes = 24 * 60 - 22 * 60
    per_lamp = minutes * abs(declared_a["22:00"] - declared_c["22:00"])
    lamps = len([lamp for lamp in agent.config.file.lamps if lamp.group == "village"])
    first = report.days[0]
    assert first.lamps.level_minutes == per_lamp * lamps == 3 * 120 * 10
    assert first.lamps.lamp_minutes == minutes * lamps
    assert first.groups["village"].level_minutes == per_lamp * lamps
    assert report.days[1].lamps.level_minutes == 0, "after midnight both say 30%"
    assert first.responder_differences == 0 and not first.alerts_only_active and not first.alerts_only_candidate


async def test_a_different_responder_chain_is_recorded_alert_by_alert(tmp_path: Path) -> None:
    clock = ManualClock(DUSK)
    async with gateway(_gateway(tmp_path, REVERSED_CHAIN), clock) as agent:
        await minutes_until(clock, at(22, 30))
        agent.handle_event(Event("W1", "wearable", "sos", clock.now(), "lane", None, {"seq": 1}))
        await minutes_until(clock, at(22, 40))  # nobody answers: both escalate after 2 min
        await asyncio.sleep(0)
        assert agent.shadow is not None
        day = agent.shadow.report().days[-1]
    assert day.alerts_both == 1 and day.responder_differences == 2
    assert [(r.rule, r.device, r.step, r.active, r.candidate) for r in day.responders] == [
        ("sos", "W1", 0, "doc1", "doc2"),
        ("sos", "W1", 1, "doc2", "doc1"),
    ]
    assert day.lamps.lamp_minutes == 0


_ID = re.compile(rb"[0-9a-f]{32}")


def _normalised(rows: list[bytes]) -> list[bytes]:
    """Random ids (alert, message, command) replaced by their order of first appearance."""
    seen: dict[bytes, bytes] = {}
    return [_ID.sub(lambda m: seen.setdefault(m.group(0), b"id%d" % len(seen)), row) for row in rows]


async def _active_outputs(tmp_path: Path, candidate: str | None, *, broken: bool = False) -> list[bytes]:
    clock = ManualClock(DUSK)
    effects: list[Effect] = []
    async with gateway(_gateway(tmp_path, candidate), clock) as agent:
        if broken:
            assert agent.shadow is not None

            def fail(event: Event) -> Any:
                raise RuntimeError("the candidate is broken")

            agent.shadow.engine.handle = fail  # type: ignore[method-assign]
        await village_night(agent, clock, effects)
        rows = [
            f"{m.topic} {m.priority}".encode() + b" " + m.payload
            for link in ("south", "north")
            for m in agent.store.outbox.pending(link, limit=10_000)
        ]
        rows += [msgspec.json.encode(e) for e in effects if isinstance(e, LampSet)]
        rows += [msgspec.json.encode(a) for a in agent.store.alerts.newest()]
        if broken:
            assert agent.shadow is not None
            errors = [d.candidate_errors for d in agent.shadow.report().days]
            assert errors == [2, 1], "the person and the SOS; after midnight the lamp report: caught, counted"
    return _normalised(rows)


@pytest.mark.parametrize("broken", [False, True], ids=["candidate", "failing-candidate"])
async def test_the_active_outputs_are_the_same_bytes_with_and_without_a_shadow(tmp_path: Path, broken: bool) -> None:
    (tmp_path / "plain").mkdir()
    (tmp_path / "shadowed").mkdir()
    plain = await _active_outputs(tmp_path / "plain", None)
    shadowed = await _active_outputs(tmp_path / "shadowed", DIMMER if broken else REVERSED_CHAIN, broken=broken)
    shadow_reports = [row for row in shadowed if b"/shadow/report " in row]
    assert len(shadow_reports) == 1, "one finished day, reported north (the only extra output)"
    assert [row for row in shadowed if row not in shadow_reports] == plain
    assert len(plain) > 15


async def test_the_finished_day_is_kept_published_and_read_back(tmp_path: Path) -> None:
    clock = ManualClock(DUSK)
    config = _gateway(tmp_path, DIMMER, days=1)
    async with gateway(config, clock) as agent:
        await village_night(agent, clock)
        assert agent.shadow is not None and agent.shadow.finished, "one day planned: over at midnight"
        north = [m for m in agent.store.outbox.pending("south", limit=1000) if m.topic == topics.shadow_report(GW)]
    assert len(north) == 1
    sent = decode_report(north[0].payload)
    assert [d.day for d in sent.days] == ["2026-01-01"] and sent.days[0].complete
    assert sent.candidate_sha256 != load_config(config.path).policy.sha256
    result = CliRunner().invoke(cli_app, ["shadow", "report", "-c", str(config.path), "--json"])
    assert result.exit_code == 0, result.output
    kept: ShadowReport = decode_report(result.stdout.encode())
    assert kept.days == sent.days and kept.days_planned == 1
    table = CliRunner().invoke(cli_app, ["shadow", "report", "-c", str(config.path)])
    assert table.exit_code == 0 and "lamp group village: 360 lamp-minutes apart, 3600 level-minutes" in table.stdout


def test_a_candidate_that_cannot_be_read_or_does_not_fit_is_a_config_problem(tmp_path: Path) -> None:
    extra = {"shadow": {"policy": "missing.toml"}}
    path = write_gateway_config(tmp_path, GW, south_url="mqtt://x:1", policy_text=DEFAULT_POLICY, extra=extra)
    with pytest.raises(ConfigError, match=r"shadow\.policy"):
        load_config(path)
    (tmp_path / "nogroup.toml").write_text(POLICY_HEAD.replace("default =", "town =") + SOS_RULE)
    path.write_text(path.read_text().replace("missing.toml", "nogroup.toml"))
    with pytest.raises(ConfigError, match="no program for group"):
        load_config(path)
