"""The engine: events and time in, effects out, every pending timer persisted.

Owns: matching events to rules and running their actions, ``for`` timers on thresholds,
absence timers, time and sun triggers, lamp overrides with revert and commands, and rule traces.
Alert lifecycles are edge_agent/engine/alerting.py's, the pending timers
edge_agent/engine/timer_queue.py's. All state changes go to the store's parts (timers, alerts)
inside the caller's transaction, together with the outbox messages the caller derives from the
returned effects: a crash either keeps a timer and no message, or the message and no timer. So
each timer fires exactly once.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import msgspec

from edge_agent.engine.alerting import DISPATCH_TIMERS, Alerting
from edge_agent.engine.context import RuleContext, SunElevation
from edge_agent.engine.effects import Effect, LampSet, PublishRequest, SendRequest
from edge_agent.engine.lighting import LampState, LightingController
from edge_agent.engine.rules import CompiledRule, compile_rule, render, render_topic, render_value
from edge_agent.engine.schedule import next_fire
from edge_agent.engine.site import Site
from edge_agent.engine.timer_queue import FOREVER, TimerQueue
from edge_agent.engine.traces import TraceBuffer
from edge_agent.models import Event
from edge_agent.policy.expr import evaluate
from edge_agent.policy.model import Notify, Policy, Publish, RaiseAlert, Send, SetLamp
from edge_agent.policy.programs import compile_programs
from edge_agent.policy.units import parse_duration
from edge_agent.store.db import Store
from edge_agent.store.timers import Timer


class Engine:
    def __init__(self, policy: Policy, site: Site, store: Store) -> None:
        self.policy = policy
        self.site = site
        self.rules = [compile_rule(r) for r in policy.rules if r.enabled]
        self.rules_by_id = {r.id: r for r in self.rules}
        self.by_event: dict[str, list[CompiledRule]] = {}
        for rule in self.rules:
            for name in rule.events:
                self.by_event.setdefault(name, []).append(rule)
        # the rules an event's name, device, group and zone select, in policy order: a selector
        # depends on nothing else, so each combination is worked out once (bounded below)
        self._selected: dict[tuple[str, str, str, str | None, str | None], tuple[CompiledRule, ...]] = {}
        # events whose handling may raise an alert, move a timer or store a send: committed with fsync
        self.durable_events = frozenset(
            name
            for rule in self.rules
            if rule.trigger in ("threshold", "absence")
            or any(isinstance(a, RaiseAlert | Notify) or (isinstance(a, Send) and a.outbox) for a in rule.actions)
            for name in rule.events
        )
        programs = compile_programs(policy)
        lamps: dict[str, LampState] = {}
        for lamp in site.lamps:
            program_name = policy.program_for_group(lamp.group)
            if program_name is None:
                continue  # the config loader refuses this; the bench may build such sites
            lamps[lamp.id] = LampState(lamp.id, lamp.group, lamp.zone, programs[program_name])
        self.lighting = LightingController(lamps, site.latitude, site.longitude, site.tz)
        self.trace_buffer = TraceBuffer(site.traces_per_rule)
        self.traces = self.trace_buffer.by_rule  # rule id -> its newest traces
        self._trace = self.trace_buffer.add
        # a trace's "condition" when it evaluated without trouble, False then True: built once
        # per rule, shared by its traces (which nobody changes)
        self._condition_traces = {
            r.id: ({"if": r.condition_text, "result": False}, {"if": r.condition_text, "result": True})
            for r in self.rules
        }
        self.timers = TimerQueue(store.timers)
        self.alerting = Alerting(policy, site, store.alerts, self.timers, self._trace)
        self.sun = SunElevation(site.latitude, site.longitude)

    # ----- start ------------------------------------------------------------------------------
    def start(self, now: float) -> list[Effect]:
        """Load persisted timers, schedule time/sun triggers and absence watches; first tick.

        Call inside a store transaction. Overdue persisted timers fire at the next ``fire_due``.
        """
        for timer in self.timers.load():
            if timer.kind == "override":
                self.lighting.override(timer.data["lamps"], timer.data["level"], timer.data["reason"], now)
        for rule in self.rules:
            if rule.trigger in ("time", "sun"):
                self._schedule_next(rule, now)
            elif rule.trigger == "absence":
                for device, (kind, group, zone) in self.site.devices.items():
                    probe = Event(device, kind, next(iter(rule.events)), now, zone, group)
                    key = f"absence:{rule.id}:{device}"
                    if rule.matches(probe) and key not in self.timers.pending:
                        self.timers.put(
                            Timer(
                                key,
                                now + rule.for_seconds,
                                "absence",
                                {
                                    "rule": rule.id,
                                    "device": device,
                                    "kind": kind,
                                    "group": group,
                                    "zone": zone,
                                },
                            )
                        )
        effects: list[Effect] = list(self.alerting.start(now, self.timers.pending))
        return effects + list(self.lighting.tick(now))

    # ----- events -----------------------------------------------------------------------------
    def handle(self, event: Event) -> list[Effect]:
        """One typed event in; effects out. Call inside a store transaction."""
        effects: list[Effect] = []
        now = event.ts
        if event.kind == "camera" and event.name in ("person", "vehicle") and self.sun.is_dark(now):
            changes, until = self.lighting.boost_zone(event.zone, now)
            effects.extend(changes)
            if until > now:  # in memory only: a lost boost end is caught by the next tick
                self.timers.schedule(Timer(f"boost:{event.zone}", until, "boost", {}))
        shared = RuleContext(self.site, self.sun, event, {})  # one lazy context for every rule this event runs
        trigger: dict[str, Any] | None = None  # one for the event's rule runs (traces only read it)
        for rule in self._select(event):
            if rule.trigger == "event":
                if trigger is None:
                    trigger = {"type": "event", "event": event.name, "device": event.device}
                effects.extend(self._run(rule, event, trigger, {}, shared))
            elif rule.trigger == "threshold":
                self._threshold(rule, event, effects)
            elif rule.trigger == "absence":
                key = f"absence:{rule.id}:{event.device}"
                data = {
                    "rule": rule.id,
                    "device": event.device,
                    "kind": event.kind,
                    "group": event.group,
                    "zone": event.zone,
                }
                self.timers.put(Timer(key, now + rule.for_seconds, "absence", data))
        return effects

    SELECTED_KEEP = 20_000  # combinations remembered (a site has a few hundred devices)

    def _select(self, event: Event) -> tuple[CompiledRule, ...]:
        key = (event.name, event.kind, event.device, event.group, event.zone)
        rules = self._selected.get(key)
        if rules is None:
            if len(self._selected) >= self.SELECTED_KEEP:
                self._selected.clear()
            rules = tuple(r for r in self.by_event.get(event.name, ()) if r.matches(event))
            self._selected[key] = rules
        return rules

    def _threshold(self, rule: CompiledRule, event: Event, effects: list[Effect]) -> None:
        assert rule.field is not None
        value = event.data.get(rule.field)
        if not isinstance(value, int | float) or isinstance(value, bool):
            return
        key = f"threshold:{rule.id}:{event.device}"
        pending = self.timers.pending.get(key)
        if not rule.crossed(float(value)):
            if pending is not None:
                self.timers.drop(key)
            return
        if pending is not None:
            return  # already counting, or latched until the value goes back
        if rule.for_seconds <= 0:
            self.timers.put(Timer(key, FOREVER, "latch", {"rule": rule.id}))
            effects.extend(
                self._run(
                    rule,
                    event,
                    {"type": "threshold", "field": rule.field, "value": value},
                    {"value": value},
                )
            )
            return
        data = {
            "rule": rule.id,
            "device": event.device,
            "kind": event.kind,
            "group": event.group,
            "zone": event.zone,
            "value": value,
            "since": event.ts,
        }
        self.timers.put(Timer(key, event.ts + rule.for_seconds, "threshold", data))

    # ----- commands from outside the rules -----------------------------------------------------
    def command_lamp(
        self, lamp: str, level: float, source: str, now: float, for_seconds: float | None = None
    ) -> list[Effect]:
        """A lamp level commanded from outside the policy's rules (Home Assistant, an operator's
        tool): the override a rule's ``set_lamp`` makes, by the same path: persisted (a restart
        keeps it), back to the program after ``for_seconds`` (None: until the next command),
        its ``LampSet`` reason ``command:<source>``, traced under ``source``. A new command
        replaces the previous one of the same source. Call inside a store transaction."""
        started = time.perf_counter_ns()
        lamps = [state.lamp for state in self.lighting.resolve(lamp, None, None)]
        key = f"override:command:{source}:{lamp}"  # ":" is not in a rule id: no clash
        self.timers.drop(key)
        effects: list[Effect] = list(self._override(lamps, level, f"command:{source}", key, for_seconds, now))
        until = f" for {for_seconds:g}s" if for_seconds is not None else ""
        self._trace(
            {
                "rule": source,
                "ts": now,
                "trigger": {"type": "command", "source": source, "device": lamp},
                "condition": None,
                "actions": [f"set_lamp {lamp} level={level:g}{until} ({len(lamps)} lamps)"],
                "duration_us": (time.perf_counter_ns() - started) // 1000,
            }
        )
        return effects

    def _override(
        self, lamps: list[str], level: float, reason: str, key: str, duration: float | None, now: float
    ) -> list[LampSet]:
        """Override ``lamps`` at ``level`` and persist the override (timer ``key``), to revert
        after ``duration`` seconds (None: never)."""
        changes = self.lighting.override(lamps, level, reason, now)
        due = now + duration if duration is not None else FOREVER
        self.timers.put(Timer(key, due, "override", {"lamps": lamps, "level": level, "reason": reason}))
        return changes

    # ----- acknowledgements -------------------------------------------------------------------
    def acknowledge(self, alert_id: str, responder: str, now: float) -> list[Effect]:
        """A responder acknowledged (edge_agent/engine/alerting.py). Call inside a store transaction."""
        return self.alerting.acknowledge(alert_id, responder, now)

    def resolve(self, alert_id: str, responder: str, now: float) -> list[Effect]:
        """The busy responder resolved the alert. Call inside a store transaction."""
        return self.alerting.resolve(alert_id, responder, now)

    def unreachable(self, alert_id: str, responder: str, now: float) -> list[Effect]:
        """No channel reaches the notified responder: escalate now. Call inside a store transaction."""
        return self.alerting.unreachable(alert_id, responder, now)

    # ----- time -------------------------------------------------------------------------------
    def next_due(self) -> float | None:
        return self.timers.next_due()

    def fire_due(self, now: float) -> list[Effect]:
        """Fire every timer due at ``now``. Call inside a store transaction."""
        effects: list[Effect] = []
        together: list[Timer] = []  # dispatch timers of one due time: fired as one batch
        while True:
            due = self.next_due()
            if together and due != together[0].due:
                effects.extend(self.alerting.fire(together, now))
                together = []
            if due is None or due > now:
                return effects
            timer = self.timers.pop()
            key = timer.timer_id
            if timer.kind in DISPATCH_TIMERS:
                if timer.kind == "shift":
                    self.timers.forget(key)  # in memory, like boosts: computed again at start
                else:
                    self.timers.drop(key)
                together.append(timer)
                continue
            effects.extend(self._fire(timer, now))

    def _fire(self, timer: Timer, now: float) -> list[Effect]:
        data = timer.data
        kind = timer.kind
        if kind in ("schedule",):
            self.timers.forget(timer.timer_id)
            rule = self.rules_by_id.get(data["rule"])
            if rule is None:
                return []
            self._schedule_next(rule, timer.due + 1.0)
            probe = Event("gateway", "gateway", rule.trigger, timer.due)
            return self._run(rule, probe, {"type": rule.trigger, "scheduled": timer.due}, {})
        if kind == "boost":
            self.timers.forget(timer.timer_id)
            return list(self.lighting.tick(now))
        self.timers.drop(timer.timer_id)
        if kind == "override":
            return list(self.lighting.release(data["lamps"], now))
        rule = self.rules_by_id.get(data.get("rule", ""))
        if rule is None:
            return []
        event = Event(
            data["device"],
            data["kind"],
            kind,
            timer.due,
            data.get("zone"),
            data.get("group"),
            {"value": data.get("value", 0)},
        )
        if kind == "threshold":
            self.timers.put(Timer(timer.timer_id, FOREVER, "latch", {"rule": rule.id}))
            trigger = {
                "type": "threshold",
                "field": rule.field,
                "value": data["value"],
                "held_since": data["since"],
            }
            return self._run(rule, event, trigger, {"value": data["value"]})
        if kind == "absence":
            trigger = {"type": "absence", "device": data["device"], "silent_for": rule.for_seconds}
            return self._run(rule, event, trigger, {})
        return []

    def _schedule_next(self, rule: CompiledRule, after: float) -> None:
        site = self.site
        due = next_fire(rule.declaration.when, after, site.tz, site.latitude, site.longitude)
        if due is None:
            return
        self.timers.schedule(Timer(f"schedule:{rule.id}", due, "schedule", {"rule": rule.id}))

    # ----- lighting ---------------------------------------------------------------------------
    def tick_lighting(self, now: float) -> list[Effect]:
        return list(self.lighting.tick(now))

    # ----- rule runs --------------------------------------------------------------------------
    def _run(
        self,
        rule: CompiledRule,
        event: Event,
        trigger: dict[str, Any],
        extra: Mapping[str, Any],
        shared: RuleContext | None = None,
    ) -> list[Effect]:
        started = time.perf_counter_ns()
        env = shared if shared is not None and not extra else RuleContext(self.site, self.sun, event, extra)
        condition: dict[str, Any] | None = None
        if rule.condition is not None:
            passed, reason = evaluate(rule.condition, env)
            if reason:
                condition = {"if": rule.condition_text, "result": passed, "reason": reason}
            else:
                condition = self._condition_traces[rule.id][passed]
            if not passed:
                self._trace(
                    {
                        "rule": rule.id,
                        "ts": event.ts,
                        "trigger": trigger,
                        "condition": condition,
                        "actions": [],
                        "duration_us": (time.perf_counter_ns() - started) // 1000,
                    }
                )
                return []
        effects: list[Effect] = []
        done: list[str] = []
        for action in rule.actions:
            done.append(self._act(rule, action, event, env, effects))
        self._trace(
            {
                "rule": rule.id,
                "ts": event.ts,
                "trigger": trigger,
                "condition": condition,
                "actions": done,
                "duration_us": (time.perf_counter_ns() - started) // 1000,
            }
        )
        return effects

    def _act(self, rule: CompiledRule, action: Any, event: Event, env: RuleContext, effects: list[Effect]) -> str:
        now = event.ts
        if isinstance(action, SetLamp):
            lamps = [lamp.lamp for lamp in self.lighting.resolve(action.device, action.group, action.zone)]
            target = action.device or action.group or action.zone
            duration = parse_duration(action.for_) if action.for_ is not None else None
            key = f"override:{rule.id}:{target}"
            effects.extend(self._override(lamps, float(action.level), f"rule:{rule.id}", key, duration, now))
            until = f" for {duration:g}s" if duration is not None else ""
            return f"set_lamp {target} level={action.level}{until} ({len(lamps)} lamps)"
        if isinstance(action, RaiseAlert | Notify):
            chain = action.notify if isinstance(action, RaiseAlert) else action.chain
            message = render(action.message, env)
            alert = self.alerting.raise_alert(rule.id, event.device, action.priority, message, chain, now, effects)
            return f"alert {alert.alert_id} priority={action.priority}" + (f" notify={chain}" if chain else "")
        if isinstance(action, Publish):
            payload = {k: render(v, env) if isinstance(v, str) else v for k, v in action.payload.items()}
            payload.update(rule=rule.id, device=event.device, ts=now)
            effects.append(PublishRequest(action.topic, payload))
            return f"publish {action.topic}"
        if isinstance(action, Send):
            try:
                topic = render_topic(action.topic, env)
                body = msgspec.json.encode(render_value(action.payload, env))
            except KeyError as exc:
                return f"send skipped: no value for {{{exc.args[0]}}}"
            except ValueError as exc:
                return f"send skipped: {exc}"
            effects.append(SendRequest(action.link, topic, body, action.qos, action.retain, action.outbox))
            return f"send {topic}" + ("" if action.outbox else " (no outbox)")
        raise TypeError(type(action))  # pragma: no cover - the schema admits no other action

    def take_traces(self) -> list[dict[str, Any]]:
        """The traces not yet taken (to store), oldest first."""
        return self.trace_buffer.take()
