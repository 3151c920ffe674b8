"""The engine: events and time in, effects out, every pending timer persisted.

Owns: matching events to rules, ``for`` timers on thresholds, absence timers, time and sun
triggers, lamp overrides with revert, alert lifecycles (notify, escalate, acknowledge) and
rule traces. All state changes go to the ``Store`` inside the caller's transaction, together
with the outbox messages the caller derives from the returned effects: a crash either keeps
a timer and no message, or the message and no timer. So each timer fires exactly once.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import msgspec

from edge_agent.engine.dispatching import GatewayDispatch
from edge_agent.engine.effects import AlertChanged, Effect, LampSet, PublishRequest, SendRequest
from edge_agent.engine.lighting import LampState, LightingController, LocalTime, local_time
from edge_agent.engine.rules import CompiledRule, compile_rule, render, render_topic, render_value
from edge_agent.engine.schedule import next_fire
from edge_agent.models import Event
from edge_agent.policy.dispatch_state import FULL_DAY
from edge_agent.policy.expr import evaluate
from edge_agent.policy.model import Notify, Policy, Publish, RaiseAlert, Send, SetLamp
from edge_agent.policy.programs import compile_programs
from edge_agent.policy.sun import solar_elevation
from edge_agent.policy.units import parse_duration
from edge_agent.store.db import Store, Timer, new_id

FOREVER = 1e300  # due time of a latch: persisted, never fires


@dataclass(frozen=True, slots=True)
class SiteLamp:
    id: str
    group: str
    zone: str | None


@dataclass(frozen=True, slots=True)
class SiteResponder:
    id: str
    role: str
    x: float = 0.0
    y: float = 0.0
    shift: tuple[float, float] = FULL_DAY  # local clock minutes; may wrap midnight


@dataclass(frozen=True)
class Site:
    """What the engine needs to know of the gateway's place and devices."""

    gateway: str
    latitude: float
    longitude: float
    tz: ZoneInfo
    lamps: tuple[SiteLamp, ...] = ()
    responders: tuple[SiteResponder, ...] = ()
    devices: Mapping[str, tuple[str, str | None, str | None]] = field(default_factory=dict)
    # device id -> (kind, group, zone), for absence timers of devices never heard from
    traces_per_rule: int = 20
    # device id -> (x, y) metres from the gateway: where its alerts are dispatched from
    locations: Mapping[str, tuple[float, float]] = field(default_factory=dict)


class _Context(Mapping[str, Any]):
    """Condition names, computed lazily: event values first, then the gateway's context."""

    __slots__ = ("_engine", "_event", "_extra", "_local")

    def __init__(self, engine: Engine, event: Event, extra: Mapping[str, Any]) -> None:
        self._engine = engine
        self._event = event
        self._extra = extra
        self._local: LocalTime | None = None

    def __getitem__(self, key: str) -> Any:
        if key in self._extra:
            return self._extra[key]
        data = self._event.data
        if key in data:
            return data[key]
        event = self._event
        if key == "device":
            return event.device
        if key == "kind":
            return event.kind
        if key == "event":
            return event.name
        if key == "ts":  # for templates: the event's time (a payload's own ts comes first)
            return event.ts
        if key == "gateway":
            return self._engine.site.gateway
        if key == "zone" and event.zone is not None:
            return event.zone
        if key == "group" and event.group is not None:
            return event.group
        if key in ("hour", "minute", "weekday"):
            if self._local is None:
                self._local = local_time(event.ts, self._engine.site.tz)
            local = self._local
            return {"hour": local.hour, "minute": int(local.minute), "weekday": local.weekday}[key]
        if key == "sun_elevation":
            return self._engine.sun_elevation(event.ts)
        if key == "is_dark":
            return self._engine.sun_elevation(event.ts) < -0.833
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._event.data)

    def __len__(self) -> int:
        return len(self._event.data)


class Engine:
    def __init__(self, policy: Policy, site: Site, store: Store) -> None:
        self.policy = policy
        self.site = site
        self.store = store
        self.rules = [compile_rule(r) for r in policy.rules if r.enabled]
        self.rules_by_id = {r.id: r for r in self.rules}
        self.by_event: dict[str, list[CompiledRule]] = {}
        for rule in self.rules:
            for name in rule.events:
                self.by_event.setdefault(name, []).append(rule)
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
        self.traces: dict[str, deque[dict[str, Any]]] = {}
        self.unsaved_traces: deque[dict[str, Any]] = deque(maxlen=10_000)
        self._heap: list[tuple[float, str]] = []
        self._timers: dict[str, Timer] = {}
        # who is notified, busy or off shift; which responder an alert gets (the twin's code)
        self.dispatch = GatewayDispatch(policy, site, store, self._put_timer, self._drop_timer, self._schedule)
        self._elevation_cache: tuple[float, float] = (-1.0, 0.0)

    # ----- start ------------------------------------------------------------------------------
    def start(self, now: float) -> list[Effect]:
        """Load persisted timers, schedule time/sun triggers and absence watches; first tick.

        Call inside a store transaction. Overdue persisted timers fire at the next ``fire_due``.
        """
        for timer in self.store.timers():
            self._timers[timer.timer_id] = timer
            heapq.heappush(self._heap, (timer.due, timer.timer_id))
            if timer.kind == "override":
                self.lighting.override(timer.data["lamps"], timer.data["level"], timer.data["reason"], now)
        for rule in self.rules:
            if rule.trigger in ("time", "sun"):
                self._schedule_next(rule, now)
            elif rule.trigger == "absence":
                for device, (kind, group, zone) in self.site.devices.items():
                    probe = Event(device, kind, next(iter(rule.events)), now, zone, group)
                    key = f"absence:{rule.id}:{device}"
                    if rule.matches(probe) and key not in self._timers:
                        self._put_timer(
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
        effects: list[Effect] = list(self.dispatch.start(now, self._timers))
        return effects + list(self.lighting.tick(now))

    # ----- events -----------------------------------------------------------------------------
    def handle(self, event: Event) -> list[Effect]:
        """One typed event in; effects out. Call inside a store transaction."""
        effects: list[Effect] = []
        now = event.ts
        if event.kind == "camera" and event.name in ("person", "vehicle") and self.is_dark(now):
            changes, until = self.lighting.boost_zone(event.zone, now)
            effects.extend(changes)
            if until > now:  # in memory only: a lost boost end is caught by the next tick
                key = f"boost:{event.zone}"
                self._timers[key] = Timer(key, until, "boost", {})
                heapq.heappush(self._heap, (until, key))
        shared = _Context(self, event, {})  # one lazy context for every rule this event runs
        for rule in self.by_event.get(event.name, ()):
            if not rule.matches(event):
                continue
            if rule.trigger == "event":
                effects.extend(
                    self._run(
                        rule,
                        event,
                        {"type": "event", "event": event.name, "device": event.device},
                        {},
                        shared,
                    )
                )
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
                self._put_timer(Timer(key, now + rule.for_seconds, "absence", data))
        return effects

    def _threshold(self, rule: CompiledRule, event: Event, effects: list[Effect]) -> None:
        assert rule.field is not None
        value = event.data.get(rule.field)
        if not isinstance(value, int | float) or isinstance(value, bool):
            return
        key = f"threshold:{rule.id}:{event.device}"
        pending = self._timers.get(key)
        if not rule.crossed(float(value)):
            if pending is not None:
                self._drop_timer(key)
            return
        if pending is not None:
            return  # already counting, or latched until the value goes back
        if rule.for_seconds <= 0:
            self._put_timer(Timer(key, FOREVER, "latch", {"rule": rule.id}))
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
        self._put_timer(Timer(key, event.ts + rule.for_seconds, "threshold", data))

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
        self._drop_timer(key)
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
        self._put_timer(Timer(key, due, "override", {"lamps": lamps, "level": level, "reason": reason}))
        return changes

    # ----- acknowledgements -------------------------------------------------------------------
    def acknowledge(self, alert_id: str, responder: str, now: float) -> list[Effect]:
        """A responder acknowledged: stop escalating; the responder is busy until the alert is
        resolved. Unknown, repeated or refused acks (edge_agent/policy/dispatch_state.py) change
        nothing."""
        return self._dispatch_trace(self.dispatch.ack(alert_id, responder, now), "ack", alert_id, responder, now)

    def resolve(self, alert_id: str, responder: str, now: float) -> list[Effect]:
        """The busy responder resolved the alert: available again. Others change nothing."""
        effects = self.dispatch.resolve(alert_id, responder, now)
        return self._dispatch_trace(effects, "resolve", alert_id, responder, now)

    def _dispatch_trace(self, effects: list[Effect], kind: str, alert_id: str, who: str, now: float) -> list[Effect]:
        changed = [e.alert for e in effects if isinstance(e, AlertChanged)]
        if changed:
            self._trace(
                {
                    "rule": changed[0]["rule"],
                    "ts": now,
                    "trigger": {"type": kind, "alert": alert_id, "responder": who},
                    "condition": None,
                    "actions": [f"{a['alert_id']} {a['status']} -> {a['responder']}" for a in changed],
                    "duration_us": 0,
                }
            )
        return effects

    # ----- time -------------------------------------------------------------------------------
    def next_due(self) -> float | None:
        while self._heap:
            due, key = self._heap[0]
            timer = self._timers.get(key)
            if timer is None or timer.due != due:
                heapq.heappop(self._heap)  # stale entry
                continue
            return due if due < FOREVER else None
        return None

    def fire_due(self, now: float) -> list[Effect]:
        """Fire every timer due at ``now``. Call inside a store transaction."""
        effects: list[Effect] = []
        together: list[Timer] = []  # dispatch timers of one due time: fired as one batch
        while True:
            due = self.next_due()
            if together and due != together[0].due:
                effects.extend(self._fire_dispatch(together, now))
                together = []
            if due is None or due > now:
                return effects
            _, key = heapq.heappop(self._heap)
            timer = self._timers[key]
            if timer.kind in ("escalate", "resolve", "shift"):
                if timer.kind == "shift":
                    del self._timers[key]  # in memory, like boosts: computed again at start
                else:
                    self._drop_timer(key)
                together.append(timer)
                continue
            effects.extend(self._fire(timer, now))

    def _fire_dispatch(self, timers: list[Timer], now: float) -> list[Effect]:
        effects = self.dispatch.fire(timers, now)
        for timer in timers:
            if timer.kind != "shift":
                alert_id = timer.data["alert_id"]
                mine: list[Effect] = [
                    e for e in effects if isinstance(e, AlertChanged) and e.alert["alert_id"] == alert_id
                ]
                trigger = "escalation" if timer.kind == "escalate" else "resolve_timeout"
                self._dispatch_trace(mine, trigger, alert_id, "", now)
        return effects

    def _fire(self, timer: Timer, now: float) -> list[Effect]:
        data = timer.data
        kind = timer.kind
        if kind in ("schedule",):
            del self._timers[timer.timer_id]
            rule = self.rules_by_id.get(data["rule"])
            if rule is None:
                return []
            self._schedule_next(rule, timer.due + 1.0)
            probe = Event("gateway", "gateway", rule.trigger, timer.due)
            return self._run(rule, probe, {"type": rule.trigger, "scheduled": timer.due}, {})
        if kind == "boost":
            del self._timers[timer.timer_id]
            return list(self.lighting.tick(now))
        self._drop_timer(timer.timer_id)
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
            self._put_timer(Timer(timer.timer_id, FOREVER, "latch", {"rule": rule.id}))
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
        key = f"schedule:{rule.id}"
        self._timers[key] = Timer(key, due, "schedule", {"rule": rule.id})
        heapq.heappush(self._heap, (due, key))

    # ----- lighting ---------------------------------------------------------------------------
    def tick_lighting(self, now: float) -> list[Effect]:
        return list(self.lighting.tick(now))

    def sun_elevation(self, now: float) -> float:
        cached_at, value = self._elevation_cache
        if abs(now - cached_at) > 30.0:
            value = solar_elevation(now, self.site.latitude, self.site.longitude)
            self._elevation_cache = (now, value)
        return value

    def is_dark(self, now: float) -> bool:
        return self.sun_elevation(now) < -0.833

    # ----- rule runs --------------------------------------------------------------------------
    def _run(
        self,
        rule: CompiledRule,
        event: Event,
        trigger: dict[str, Any],
        extra: Mapping[str, Any],
        shared: _Context | None = None,
    ) -> list[Effect]:
        started = time.perf_counter_ns()
        env = shared if shared is not None and not extra else _Context(self, event, extra)
        condition: dict[str, Any] | None = None
        if rule.condition is not None:
            passed, reason = evaluate(rule.condition, env)
            condition = {"if": rule.condition_text, "result": passed}
            if reason:
                condition["reason"] = reason
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

    def _act(self, rule: CompiledRule, action: Any, event: Event, env: _Context, effects: list[Effect]) -> str:
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
            alert = self._raise(rule.id, event.device, action.priority, message, chain, now, effects)
            return f"alert {alert['alert_id']} priority={action.priority}" + (f" notify={chain}" if chain else "")
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

    # ----- alerts -----------------------------------------------------------------------------
    def _raise(
        self,
        rule: str,
        device: str,
        priority: int,
        message: str,
        chain: str | None,
        now: float,
        effects: list[Effect],
    ) -> dict[str, Any]:
        alert: dict[str, Any] = {
            "alert_id": new_id(),
            "created": now,
            "device": device,
            "rule": rule,
            "priority": priority,
            "message": message,
            "chain": chain,
            "step": 0,
            "responder": None,
            "status": "raised",
            "updated": now,
        }
        self.store.put_alert(alert)
        if chain is not None and chain in self.policy.chains:
            effects.extend(self.dispatch.incident(alert, now))
        else:
            effects.append(AlertChanged(dict(alert)))
        return alert

    # ----- timers and traces ------------------------------------------------------------------
    def _put_timer(self, timer: Timer) -> None:
        self._timers[timer.timer_id] = timer
        self.store.put_timer(timer)
        heapq.heappush(self._heap, (timer.due, timer.timer_id))

    def _schedule(self, timer: Timer) -> None:
        """An in-memory timer (not persisted)."""
        self._timers[timer.timer_id] = timer
        heapq.heappush(self._heap, (timer.due, timer.timer_id))

    def _drop_timer(self, key: str) -> None:
        if self._timers.pop(key, None) is not None:
            self.store.delete_timer(key)

    def _trace(self, trace: dict[str, Any]) -> None:
        kept = self.traces.get(trace["rule"])
        if kept is None:
            kept = self.traces[trace["rule"]] = deque(maxlen=self.site.traces_per_rule)
        kept.append(trace)
        self.unsaved_traces.append(trace)  # bounded: the oldest unsaved ones fall off

    def take_traces(self) -> list[dict[str, Any]]:
        traces = list(self.unsaved_traces)
        self.unsaved_traces.clear()
        return traces
