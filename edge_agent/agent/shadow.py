"""Shadow mode: a candidate policy decides beside the active one and acts on nothing.

Owns: the candidate's engine on a store of its own (``shadow.sqlite3`` in the data dir: its
timers and alerts never touch the gateway's); feeding it every input the active engine handled
(device events, acknowledgements, timer wake-ups, lighting minutes), always *after* the active
commit and from a queue its own task drains, so the active path never waits for it and an
exception in it is caught and counted; comparing what the two decided into the local day's
``ShadowDay``; publishing each finished day north (``shadow/report``). The days are kept in
the candidate's store (``edge_agent.agent.shadow_store``).

The comparison, per input: lamp levels at each lighting minute (the active engine's levels right
after its tick against the candidate's after its own: level-minutes by lamp group); new alerts,
paired across the two by rule and device within ``PAIR_WINDOW_S`` (one raised without the
other's counts by rule); for paired alerts, the responder each notified at each escalation step;
rule publishes, counted by topic over the day.
Must not import: the app or the other flows (intake and loops call the ``on_*`` methods).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import sqlite3
import time
from collections import deque
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import msgspec

from edge_agent.agent import topics
from edge_agent.agent.runtime import ActivePolicy, Links
from edge_agent.agent.shadow_store import SHADOW_DB, load_day, open_shadow_store, read_days, save_day, settle
from edge_agent.clock import Clock
from edge_agent.config import GatewayConfig
from edge_agent.engine import AlertChanged, Effect, Engine, NotifyResponder, PublishRequest, Site
from edge_agent.models import Alert, Event
from edge_agent.policy.shadow_report import (
    MAX_RESPONDER_DIFFS,
    LampDiff,
    ResponderDiff,
    ShadowDay,
    ShadowReport,
    encode_report,
)
from edge_agent.store.db import Store
from edge_agent.store.outbox import EVENT_PRIORITY

__all__ = ["Shadow", "queue_report", "start_shadow"]

log = logging.getLogger("edge_agent")

QUEUE_MAX = 10_000  # inputs waiting for the candidate; beyond it they are dropped (and counted)
REMEMBER = 10_000  # alerts remembered for pairing and for their escalation steps
PAIR_WINDOW_S = 600.0  # two alerts of one rule and device raised this close are the same incident
PERSIST_EVERY = 10  # lighting minutes between two saves of the open day
ACTIVE, CANDIDATE = 0, 1


@dataclass(frozen=True, slots=True)
class _Input:
    now: float
    active: list[Effect]  # what the active engine decided for this input
    events: tuple[Event, ...] = ()
    ack: tuple[str, str] | None = None  # (active alert id, responder)
    timers: bool = False  # a wake-up of the timer loop
    levels: dict[str, float] | None = None  # the active lamp levels after its lighting minute


@dataclass(slots=True)
class _Pending:
    ts: float
    rule: str
    device: str
    alert_id: str


def _remember(table: dict[Any, Any], key: Any, value: Any) -> None:
    table[key] = value
    if len(table) > REMEMBER:
        del table[next(iter(table))]


def _add(counts: dict[str, int], key: str, n: int = 1) -> None:
    counts[key] = counts.get(key, 0) + n


class Shadow:
    def __init__(
        self,
        config: GatewayConfig,
        site: Site,
        clock: Clock,
        active: ActivePolicy,
        links: Links,
        store: Store,
    ) -> None:
        """``store``: the gateway's own store, only to queue the daily report in its outbox."""
        assert config.file.shadow is not None and config.shadow_policy is not None
        self.gateway = config.id
        self.tz = config.tz
        self.days = config.file.shadow.days
        self.candidate = config.shadow_policy.policy.name
        self.candidate_sha256 = hashlib.sha256(config.shadow_policy_bytes).hexdigest()
        self.clock = clock
        self.active = active
        self.links = links
        self.gateway_store = store
        self.store = open_shadow_store(config.data_dir / SHADOW_DB, self.candidate_sha256)
        self.engine = Engine(config.shadow_policy, site, self.store)
        self.groups = {lamp.id: lamp.group for lamp in site.lamps}
        self.queue: deque[_Input] = deque()
        self.finished = False  # its days are over (or it could not start): inputs are ignored
        self.day: ShadowDay | None = None
        self.processed = 0
        self._wake = asyncio.Event()
        self._dropped = 0  # inputs dropped before a day was open to count them
        self._minutes = 0
        self._pair: tuple[dict[str, str], dict[str, str]] = ({}, {})  # alert id -> the other side's
        self._known: tuple[dict[str, None], dict[str, None]] = ({}, {})  # alert ids seen, by side
        self._steps: tuple[dict[str, dict[int, str]], dict[str, dict[int, str]]] = ({}, {})
        self._meta: dict[str, tuple[float, str, str]] = {}  # active alert id -> (ts, rule, device)
        self._pending: tuple[list[_Pending], list[_Pending]] = ([], [])
        started = self.store.meta.get("shadow.started") or self._date(clock.now()).isoformat()
        with self.store.transaction(durable=False):
            self.store.meta.set("shadow.started", started)
            self.store.meta.set("shadow.candidate_sha256", self.candidate_sha256)
            self.store.meta.set("shadow.candidate", self.candidate)
            self.store.meta.set("shadow.days", str(self.days))
        self.started = started
        self.ends = date.fromisoformat(started) + timedelta(days=self.days)

    # ----- fed by the active path: cheap, never raising, never waiting ---------------------------
    def on_events(self, events: list[Event], effects: list[Effect]) -> None:
        """Events the intake committed (with the ``fault`` it derived), and what the active did."""
        if events:
            self._put(_Input(events[0].ts, list(effects), events=tuple(events)))

    def on_ack(self, alert_id: str, responder: str, now: float, effects: list[Effect]) -> None:
        self._put(_Input(now, list(effects), ack=(alert_id, responder)))

    def on_time(self, now: float, effects: list[Effect], minute: bool) -> None:
        """A timer-loop wake-up at ``now``; ``minute``: it ticked the lighting too."""
        try:
            levels = None
            if minute:
                levels = {lamp: state.level or 0.0 for lamp, state in self.active.engine.lighting.lamps.items()}
            self._put(_Input(now, list(effects), timers=True, levels=levels))
        except Exception:  # the active path must not see a shadow's failure
            log.exception("shadow: cannot queue a timer wake-up")

    def _put(self, item: _Input) -> None:
        if self.finished:
            return
        if len(self.queue) >= QUEUE_MAX:
            if self.day is not None:
                self.day.dropped += 1
            else:
                self._dropped += 1
            return
        self.queue.append(item)
        self._wake.set()

    # ----- the candidate's own task --------------------------------------------------------------
    async def run(self) -> None:
        """Start the candidate (its persisted timers), then feed it the queue, one input at a
        time, yielding to the event loop between inputs. Never raises (but cancellation)."""
        if not self.start():
            return
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.queue:
                try:
                    self.process(self.queue.popleft())
                except Exception:  # a bug of the comparison must not end the agent's task group
                    log.exception("shadow: an input could not be compared")
                await asyncio.sleep(0)

    def start(self) -> bool:
        now = self.clock.now()
        if self._date(now) >= self.ends:
            self.finished = True
            log.info("shadow: the %d days of candidate %s are over", self.days, self.candidate)
            return False
        try:
            with self.store.transaction(durable=False):
                self.engine.start(now)
        except Exception:
            log.exception("shadow: the candidate %s cannot start; shadow mode is off", self.candidate)
            self.finished = True
            return False
        return True

    def process(self, item: _Input) -> None:
        """One input: the candidate decides, the two are compared. Exceptions are counted."""
        begun = time.perf_counter()
        day = self._day_for(item.now)
        if day is None:
            return
        day.inputs += 1
        day.active_sha256 = self.active.engine.policy.sha256
        try:
            with self.store.transaction(durable=False):
                decided = self._decide(item)
            self._compare(day, item, decided)
        except Exception:
            if day.candidate_errors == 0:
                log.exception("shadow: the candidate %s failed on an input (counted from now on)", self.candidate)
            day.candidate_errors += 1
        finally:
            spent = (time.perf_counter() - begun) * 1000.0
            day.candidate_ms += spent
            day.candidate_max_ms = max(day.candidate_max_ms, spent)
            self.processed += 1

    def _decide(self, item: _Input) -> list[Effect]:
        engine = self.engine
        if item.events:
            effects: list[Effect] = []
            for event in item.events:
                effects.extend(engine.handle(event))
            return effects
        if item.ack is not None:
            alert_id, responder = item.ack
            mine = self._pair[ACTIVE].get(alert_id)
            return engine.acknowledge(mine, responder, item.now) if mine is not None else []
        effects = engine.fire_due(item.now)
        if item.levels is not None:
            effects.extend(engine.tick_lighting(item.now))
            engine.take_traces()  # nobody reads the candidate's traces: keep its memory flat
        return effects

    # ----- the comparison ----------------------------------------------------------------------
    def _compare(self, day: ShadowDay, item: _Input, decided: list[Effect]) -> None:
        sides = (item.active, decided)
        for side, effects in enumerate(sides):
            for effect in effects:
                if isinstance(effect, AlertChanged):
                    self._alert(day, side, effect.alert, item.now)
                elif isinstance(effect, PublishRequest):
                    _add(day.published_active if side == ACTIVE else day.published_candidate, effect.topic)
        for side, effects in enumerate(sides):
            for effect in effects:
                if isinstance(effect, NotifyResponder):
                    self._notified(day, side, effect.alert, effect.responder)
        self._expire(day, item.now - PAIR_WINDOW_S)
        if item.levels is not None:
            self._levels(day, item.levels)
            self._minutes += 1
            if self._minutes % PERSIST_EVERY == 0:
                save_day(self.store, day)

    def _levels(self, day: ShadowDay, active: dict[str, float]) -> None:
        day.minutes += 1
        for lamp, state in self.engine.lighting.lamps.items():
            apart = abs(active.get(lamp, 0.0) - (state.level or 0.0))
            if apart:
                group = day.groups.get(self.groups[lamp])
                if group is None:
                    group = day.groups[self.groups[lamp]] = LampDiff()
                for diff in (day.lamps, group):
                    diff.lamp_minutes += 1.0
                    diff.level_minutes += apart

    def _alert(self, day: ShadowDay, side: int, alert: Alert, now: float) -> None:
        alert_id = alert.alert_id
        known = self._known[side]
        if alert_id in known or alert.created != alert.updated:
            return  # a later change of an alert already seen (or raised before a restart)
        _remember(known, alert_id, None)
        rule, device, created = alert.rule, alert.device, float(alert.created)
        for i, other in enumerate(self._pending[1 - side]):
            if other.rule == rule and other.device == device and abs(other.ts - created) <= PAIR_WINDOW_S:
                del self._pending[1 - side][i]
                active_id, candidate_id = (alert_id, other.alert_id) if side == ACTIVE else (other.alert_id, alert_id)
                _remember(self._pair[ACTIVE], active_id, candidate_id)
                _remember(self._pair[CANDIDATE], candidate_id, active_id)
                _remember(self._meta, active_id, (now, rule, device))
                day.alerts_both += 1
                for step in set(self._steps[ACTIVE].get(active_id, {})):
                    self._judge(day, active_id, candidate_id, step)
                return
        self._pending[side].append(_Pending(created, rule, device, alert_id))

    def _expire(self, day: ShadowDay, before: float) -> None:
        """Alerts the other side did not raise within the window: raised by one side only."""
        for side in (ACTIVE, CANDIDATE):
            pending = self._pending[side]
            while pending and pending[0].ts < before:
                gone = pending.pop(0)
                _add(day.alerts_only_active if side == ACTIVE else day.alerts_only_candidate, gone.rule)

    def _notified(self, day: ShadowDay, side: int, alert: Alert, responder: str) -> None:
        alert_id, step = alert.alert_id, alert.step
        steps = self._steps[side].get(alert_id)
        if steps is None:
            steps = {}
            _remember(self._steps[side], alert_id, steps)
        if step in steps:
            return  # the last responder notified again (a chain's repeat_last)
        steps[step] = responder
        other = self._pair[side].get(alert_id)
        if other is not None:
            active_id, candidate_id = (alert_id, other) if side == ACTIVE else (other, alert_id)
            self._judge(day, active_id, candidate_id, step)

    def _judge(self, day: ShadowDay, active_id: str, candidate_id: str, step: int) -> None:
        mine = self._steps[ACTIVE].get(active_id, {}).get(step)
        theirs = self._steps[CANDIDATE].get(candidate_id, {}).get(step)
        if mine is None or theirs is None or mine == theirs:
            return
        day.responder_differences += 1
        if len(day.responders) < MAX_RESPONDER_DIFFS:
            ts, rule, device = self._meta.get(active_id, (0.0, "?", "?"))
            day.responders.append(ResponderDiff(ts, rule, device, step, mine, theirs))

    # ----- days --------------------------------------------------------------------------------
    def _date(self, now: float) -> date:
        return datetime.fromtimestamp(now, self.tz).date()

    def _day_for(self, now: float) -> ShadowDay | None:
        today = self._date(now)
        key = today.isoformat()
        if self.day is None:
            self.day = load_day(self.store, key) or ShadowDay(day=key)
            self.day.dropped += self._dropped
            self._dropped = 0
        if key > self.day.day:  # a new local day (a clock going back counts into the open one)
            self._close_day(now)
            if today >= self.ends:
                self.finished = True
                self.queue.clear()
                log.info("shadow: the %d days of candidate %s are over", self.days, self.candidate)
                return None
            self.day = ShadowDay(day=key)
        return self.day

    def _close_day(self, now: float) -> None:
        day = self.day
        assert day is not None
        self._expire(day, now - PAIR_WINDOW_S)
        day.complete = True
        save_day(self.store, day)
        report = ShadowReport(
            gateway=self.gateway,
            candidate=self.candidate,
            candidate_sha256=self.candidate_sha256,
            days_planned=self.days,
            started=self.started,
            days=[day],
        )
        try:
            queue_report(self.gateway_store, self.links, report, now)
        except sqlite3.Error as exc:  # the report stays readable in the shadow store
            log.warning("shadow: the report of %s is not queued north: %s", day.day, exc)

    # ----- reading -----------------------------------------------------------------------------
    def report(self) -> ShadowReport:
        """Every day so far, the open one included (as counted up to now)."""
        report = read_days(self.store, self.gateway) or ShadowReport(
            gateway=self.gateway,
            candidate=self.candidate,
            candidate_sha256=self.candidate_sha256,
            days_planned=self.days,
            started=self.started,
        )
        if self.day is not None:
            settle(self.day)
            report.days = [d for d in report.days if d.day != self.day.day] + [msgspec.structs.replace(self.day)]
            report.days.sort(key=lambda d: d.day)
        return report

    def close(self) -> None:
        if self.day is not None:
            save_day(self.store, self.day)
        self.store.close()


def queue_report(store: Store, links: Links, report: ShadowReport, now: float) -> None:
    """A report north (``shadow/report``), through the gateway's outbox: kept while the uplink
    is down. Raises ``sqlite3.Error`` when the store refuses it."""
    link = links.uplink
    with store.transaction(durable=False):
        topic = topics.shadow_report(report.gateway)
        store.outbox.enqueue(link, topic, encode_report(report), priority=EVENT_PRIORITY, now=now)
    links.wake[link].set()


def start_shadow(
    config: GatewayConfig, site: Site, clock: Clock, active: ActivePolicy, links: Links, store: Store
) -> Shadow | None:
    """The ``[shadow]`` candidate, or None (logged) when it cannot be set up: never the gateway's end."""
    try:
        return Shadow(config, site, clock, active, links, store)
    except Exception:
        log.exception("shadow: cannot set up the candidate policy; shadow mode is off")
        return None
