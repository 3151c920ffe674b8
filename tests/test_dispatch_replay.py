"""Dispatch equivalence by replay: one recorded incident trace, fed to the gateway's real engine
and to the twin's dispatcher, must give the same decisions.

A trace holds incidents (time, the wearable whose home is the location), each notification's
answer (acknowledged after a delay, or never) and each acknowledged alert's resolve delay (or
never: the resolve timeout frees the responder). Shift starts and ends come from the responders'
calendars. The gateway side is the real ``Engine`` with a real SQLite ``Store`` and its
persisted timers, driven on a manual timeline (engine.handle / acknowledge / resolve /
fire_due, each in a store transaction, as the agent's intake and timer loop call them) and
restarted from its store every 30 days; MQTT is left out, a year through a broker is too slow
(the broker path of ack and resolve is covered in tests/agent and tests/test_topics.py). The
twin side is ``twin.sim.dispatch.Dispatcher`` in a SimPy environment, its two behaviours (the
notification's outcome, work until resolve) read from the trace. A notification lost on every
channel is fed to the gateway as ``engine.unreachable`` at the time the last failure is known
(in a store transaction, as ``Intake.unreachable`` calls it), to the twin through its outcome.
Compared: every notification (alert, responder, step, time, escalation time), queueing,
acknowledgement (responder, step, time, resolve deadline) and the final state (resolved or
resolve_timeout, by whom, when).
"""

from __future__ import annotations

import heapq
import math
import random
import time
from collections.abc import Generator
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import simpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.engine import AlertChanged, Engine, NotifyResponder, Site
from edge_agent.engine.site import SiteResponder
from edge_agent.models import Event
from edge_agent.policy import dispatch_state as ds
from edge_agent.policy.model import parse_policy
from edge_agent.store.db import Store
from twin.sim.dispatch import ChainSpec, Dispatcher, Incident, ResponderSpec
from twin.sim.reach import Outcome

TZ = ZoneInfo("Asia/Shanghai")  # no daylight saving: twin minute 0 is local noon every day
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=TZ).timestamp()  # local noon = twin minute 0


@dataclass(frozen=True)
class Person:
    id: str
    role: str
    x: float
    y: float
    shift: str = "00:00-24:00"


@dataclass(frozen=True)
class Setup:
    responders: tuple[Person, ...]
    homes: tuple[tuple[float, float], ...]
    roles: tuple[str, ...]
    ack_timeout_min: float = 2.0
    resolve_timeout_min: float = 120.0
    repeat_last: bool = False


@dataclass(frozen=True)
class TraceIncident:
    t: float  # twin minutes (0 = T0, local noon)
    wearable: int
    acks: tuple[float | None, ...]  # per notification of this alert: minutes to the ack; None: never
    resolve: float | None  # minutes from the ack to the resolve; None: never
    # per notification: minutes until every channel of it is known to have failed; None: not all failed
    unreachable: tuple[float | None, ...] = ()


Entry = tuple[Any, ...]
HORIZON_DAYS = 3.000123457  # both sides run this long after the last incident (off any timer period)


def _r(seconds: float) -> float:
    return round(seconds, 3)


def ms(minutes: float) -> float:
    """A trace time or delay on a 1/1024 minute grid (about 59 ms): exact in binary floating
    point both as twin minutes and as the gateway's epoch seconds (T0 + 60 t), so an instant
    shared by two events (an ack and a timer, an incident and a shift start) is one instant on
    both sides, not two that differ in the last bit."""
    return round(minutes * 1024.0) / 1024.0


# ----- the trace ---------------------------------------------------------------------------
def village(seed: int) -> Setup:
    rng = random.Random(seed)
    homes = tuple((rng.uniform(-3000, 3000), rng.uniform(-3000, 3000)) for _ in range(150))
    responders = (
        Person("vd-day", "village_doctor", -800.0, 200.0, "08:00-20:00"),
        Person("vd-night", "village_doctor", 900.0, -300.0, "20:00-08:00"),
        Person("vd-east", "village_doctor", 2500.0, 1500.0, "07:30-17:30"),
        Person("td-1", "township_doctor", 6000.0, 0.0),
        Person("td-2", "township_doctor", -6000.0, 1000.0, "06:00-22:00"),
        Person("centre", "centre", 20000.0, 20000.0),
    )
    return Setup(responders, homes, ("village_doctor", "township_doctor", "centre"))


def generate(seed: int, days: int, per_day: float, homes: int) -> list[TraceIncident]:
    """A seeded trace: Poisson incidents weighted to the day, acks after random delays (about
    one notification in five unanswered, some late; of the unanswered, half lost on every
    channel, known after 3-150 s, some after the ack timeout), resolves after 10-180 min or never."""
    rng = random.Random(seed)
    lost = random.Random(seed + 1)  # its own stream: the acks and resolves as before channels
    out: list[TraceIncident] = []
    t = 0.0
    while True:
        t += rng.expovariate(per_day / 1440.0)
        if t >= days * 1440.0:
            return out
        acks = tuple(None if rng.random() < 0.2 else ms(rng.expovariate(1 / 1.2)) for _ in range(8))
        resolve = None if rng.random() < 0.1 else ms(rng.uniform(10.0, 180.0))
        unreachable = tuple(None if a is not None or lost.random() < 0.5 else ms(lost.uniform(0.05, 2.5)) for a in acks)
        out.append(TraceIncident(ms(t), rng.randrange(homes), acks, resolve, unreachable))


# ----- the gateway side ----------------------------------------------------------------------
def policy_text(setup: Setup) -> str:
    return f"""
[policy]
name = "replay"

[programs.village]
level = 80

[assign]
default = "village"

[chains.medical]
roles = {list(setup.roles)!r}
ack_timeout = "{round(setup.ack_timeout_min * 60)}s"
resolve_timeout = "{round(setup.resolve_timeout_min * 60)}s"
repeat_last = {"true" if setup.repeat_last else "false"}

[[rules]]
id = "sos"
when = {{ trigger = "event", event = "sos", kind = "wearable" }}
then = [ {{ action = "alert", priority = 1, message = "SOS from {{device}}", notify = "medical" }} ]
""".replace("'", '"')


def run_gateway(setup: Setup, trace: list[TraceIncident], db: Path, restart_days: float = 30.0) -> list[Entry]:
    policy = parse_policy(policy_text(setup).encode())
    site = Site(
        gateway="replay",
        latitude=28.77,
        longitude=105.37,
        tz=TZ,
        responders=tuple(SiteResponder(p.id, p.role, p.x, p.y, ds.parse_shift(p.shift)) for p in setup.responders),
        devices={f"W{k}": ("wearable", None, None) for k in range(len(setup.homes))},
        locations={f"W{k}": home for k, home in enumerate(setup.homes)},
    )
    index = {p.id: i for i, p in enumerate(setup.responders)}
    store = Store(db)
    log: list[Entry] = []
    of_alert: dict[str, int] = {}  # alert id -> incident number
    notifications: dict[str, int] = {}
    pending: list[tuple[float, int, str, Any]] = []  # (ts, order, kind, data)
    order = 0

    def push(ts: float, kind: str, data: Any) -> None:
        nonlocal order
        order += 1
        heapq.heappush(pending, (ts, order, kind, data))

    for k, incident in enumerate(trace):
        push(T0 + incident.t * 60.0, "incident", k)

    def timer_due(key: str) -> float:
        row = store.db.execute("SELECT due FROM timers WHERE timer_id = ?", (key,)).fetchone()
        return float(row[0]) if row is not None else math.inf

    def observe(effects: list[Any], now: float) -> None:
        for effect in effects:
            if isinstance(effect, NotifyResponder):
                alert = effect.alert
                a = alert.alert_id
                k = of_alert[a]
                i = index[effect.responder]
                notifications[a] = notifications.get(a, 0) + 1
                due = timer_due(f"escalate:{a}")
                log.append(("notify", k, i, alert.step, _r(now - T0), _r(due - T0)))
                acks = trace[k].acks
                n = notifications[a] - 1
                delay = acks[n] if n < len(acks) else None
                if delay is not None and delay * 60.0 < due - now:
                    push(now + delay * 60.0, "ack", (a, effect.responder))
                lost = trace[k].unreachable
                failed = lost[n] if n < len(lost) else None
                if failed is not None and failed * 60.0 < due - now:  # as the twin: later, the timeout
                    push(now + failed * 60.0, "unreachable", (a, effect.responder))
            elif isinstance(effect, AlertChanged):
                alert = effect.alert
                a = alert.alert_id
                status = alert.status
                k = of_alert[a]
                if status == "queued":
                    log.append(("queued", k, _r(now - T0)))
                elif status == "acknowledged":
                    i = index[alert.responder]
                    log.append(("acknowledged", k, i, alert.step, _r(now - T0), _r(timer_due(f"resolve:{a}") - T0)))
                    resolve = trace[k].resolve
                    if resolve is not None:
                        push(now + resolve * 60.0, "resolve", (a, alert.responder))
                elif status in ("resolved", "resolve_timeout"):
                    log.append((status, k, index[alert.responder], _r(now - T0)))

    def start(now: float) -> Engine:
        engine = Engine(policy, site, store)
        with store.transaction(durable=False):
            observe(engine.start(now), now)
        return engine

    engine = start(T0)
    next_restart = T0 + restart_days * 86400.0 + 0.37  # between timers (a restart at a timer's instant runs first)
    horizon = T0 + ((trace[-1].t if trace else 0.0) + HORIZON_DAYS * 1440.0) * 60.0
    while True:
        external = pending[0][0] if pending else math.inf
        due = engine.next_due()
        ts = min(external, math.inf if due is None else due)
        if ts >= horizon:
            break
        if ts >= next_restart:  # the agent restarts: a new engine on the same store
            engine = start(next_restart)
            next_restart += restart_days * 86400.0
            continue
        with store.transaction(durable=False):
            if due is not None and due < external:  # an instant's timers after its other events, as in the twin
                observe(engine.fire_due(ts), ts)
                continue
            _, _, kind, data = heapq.heappop(pending)
            if kind == "incident":
                k = data
                effects = engine.handle(Event(f"W{trace[k].wearable}", "wearable", "sos", ts, None, None, {"seq": k}))
                for effect in effects:
                    if isinstance(effect, AlertChanged | NotifyResponder):
                        of_alert.setdefault(effect.alert.alert_id, k)
                observe(effects, ts)
            elif kind == "ack":
                observe(engine.acknowledge(data[0], data[1], ts), ts)
            elif kind == "unreachable":  # every channel failed: as Intake.unreachable calls it
                observe(engine.unreachable(data[0], data[1], ts), ts)
            else:
                observe(engine.resolve(data[0], data[1], ts), ts)
    store.close()
    return log


# ----- the twin side -------------------------------------------------------------------------
class ReplayDispatcher(Dispatcher):
    """The twin's dispatcher, its world's answers read from the trace instead of drawn."""

    def __init__(self, *args: Any, trace: list[TraceIncident], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.trace = trace
        self.number: dict[int, int] = {}  # id(incident) -> incident number

    def outcome(self, incident: Incident, i: int, n: int) -> Outcome:
        item = self.trace[self.number[id(incident)]]
        acks, lost = item.acks, item.unreachable
        return Outcome(acks[n - 1] if n - 1 < len(acks) else None, lost[n - 1] if n - 1 < len(lost) else None)

    def work(self, incident: Incident, i: int) -> Generator[simpy.Event, Any, None]:
        resolve = self.trace[self.number[id(incident)]].resolve
        yield self.env.timeout(resolve) if resolve is not None else self.env.event()


def run_twin(setup: Setup, trace: list[TraceIncident]) -> list[Entry]:
    env = simpy.Environment()
    responders = [ResponderSpec(p.x, p.y, p.role, 30.0, ds.parse_shift(p.shift)) for p in setup.responders]
    chain = ChainSpec(setup.roles, setup.ack_timeout_min, setup.repeat_last, setup.resolve_timeout_min)
    dispatcher = ReplayDispatcher(env, responders, {"medical": chain}, rng=None, trace=trace)
    dispatcher.record = True

    def source() -> Generator[simpy.Event, Any, None]:
        for k, item in enumerate(trace):
            yield env.timeout(item.t - env.now)
            x, y = setup.homes[item.wearable]
            incident = Incident("sos", "village", x, y, "medical", env.now, 0.0)
            dispatcher.number[id(incident)] = k
            env.process(dispatcher.respond(incident))

    env.process(source())
    horizon = (trace[-1].t if trace else 0.0) + HORIZON_DAYS * 1440.0
    env.run(until=horizon)
    log: list[Entry] = []
    for d in dispatcher.decisions:
        k = int(d.alert)
        if d.kind == ds.NOTIFY:
            log.append(("notify", k, d.responder, d.step, _r(d.t * 60), _r(d.due * 60)))
        elif d.kind == ds.QUEUED:
            log.append(("queued", k, _r(d.t * 60)))
        elif d.kind == ds.ACKNOWLEDGED:
            log.append(("acknowledged", k, d.responder, d.step, _r(d.t * 60), _r(d.due * 60)))
        elif d.kind in (ds.RESOLVED, ds.RESOLVE_TIMEOUT):
            log.append((d.kind, k, d.responder, _r(d.t * 60)))
    return log


def early_escalations(log: list[Entry]) -> int:
    """Notifications sent before the previous notification of the same alert timed out."""
    due: dict[int, float] = {}
    early = 0
    for entry in log:
        if entry[0] == "notify":
            k, t = entry[1], entry[4]
            early += k in due and t < due[k]
            due[k] = entry[5]
        elif entry[0] == "queued":
            due.pop(entry[1], None)
    return early


def assert_same(gateway: list[Entry], twin: list[Entry]) -> None:
    for n, (a, b) in enumerate(zip(gateway, twin, strict=False)):
        assert a == b, f"decision {n} differs: gateway {a} twin {b}; before: {gateway[max(0, n - 3) : n]}"
    assert len(gateway) == len(twin), f"gateway {len(gateway)} decisions, twin {len(twin)}"


# ----- the tests ---------------------------------------------------------------------------
def test_a_year_of_village_incidents_gives_the_same_decisions_on_gateway_and_twin(tmp_path: Path) -> None:
    setup = village(7)
    trace = generate(2026, days=365, per_day=8.0, homes=len(setup.homes))
    began = time.perf_counter()
    gateway = run_gateway(setup, trace, tmp_path / "gw.sqlite3")
    twin = run_twin(setup, trace)
    assert_same(gateway, twin)
    kinds = {entry[0] for entry in gateway}
    assert kinds == {"notify", "queued", "acknowledged", "resolved", "resolve_timeout"}, kinds
    assert any(e[0] == "notify" and e[3] > 0 for e in gateway), "escalations happened"
    assert early_escalations(gateway) > 50, "notifications lost on every channel escalated before their timeout"
    assert len(trace) > 2500 and time.perf_counter() - began < 120


def test_shift_calendars_or_bases_alone_change_both_sides_choices_identically(tmp_path: Path) -> None:
    base = village(3)
    trace = generate(11, days=60, per_day=8.0, homes=len(base.homes))
    shifted = replace(base, responders=tuple(replace(p, shift="00:00-24:00") for p in base.responders))
    moved = replace(
        base,
        responders=tuple(
            replace(p, x=-p.x, y=p.y + 1500.0) if p.role == "village_doctor" else p for p in base.responders
        ),
    )
    logs = {}
    for name, setup in (("base", base), ("shifted", shifted), ("moved", moved)):
        gateway = run_gateway(setup, trace, tmp_path / f"{name}.sqlite3")
        assert_same(gateway, run_twin(setup, trace))
        logs[name] = gateway
    assert logs["shifted"] != logs["base"], "the shift calendars change who is chosen"
    assert logs["moved"] != logs["base"], "the responders' bases change who is chosen"
    chosen = {name: [(e[1], e[2]) for e in log if e[0] == "notify"] for name, log in logs.items()}
    assert chosen["shifted"] != chosen["base"] and chosen["moved"] != chosen["base"]


people = st.builds(
    lambda role, x, y, start, length: Person(
        "", role, x, y, f"{start:02d}:00-{(start + length) % 24:02d}:00" if length < 24 else "00:00-24:00"
    ),
    st.sampled_from(["a", "b"]),
    st.floats(-5000, 5000),
    st.floats(-5000, 5000),
    st.integers(0, 23),
    st.integers(1, 24),
)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Setup, list[TraceIncident]]:
    crew = draw(st.lists(people, min_size=1, max_size=4))
    crew = [replace(p, id=f"r{i}") for i, p in enumerate(crew)]
    homes = tuple(draw(st.lists(st.tuples(st.floats(-5000, 5000), st.floats(-5000, 5000)), min_size=1, max_size=4)))
    roles = tuple(draw(st.permutations(["a", "b"]))[: draw(st.integers(1, 2))])
    setup = Setup(
        tuple(crew),
        homes,
        roles,
        ack_timeout_min=draw(st.integers(1, 10)),
        resolve_timeout_min=draw(st.integers(5, 300)),
        repeat_last=draw(st.booleans()),
    )
    times = sorted({ms(t) for t in draw(st.lists(st.floats(0.001, 3 * 1440.0), min_size=1, max_size=12))})
    trace = [
        TraceIncident(
            t,
            draw(st.integers(0, len(homes) - 1)),
            tuple(draw(st.lists(st.none() | st.floats(0.01, 12.0).map(ms), max_size=6))),
            draw(st.none() | st.floats(0.5, 400.0).map(ms)),
            tuple(draw(st.lists(st.none() | st.floats(0.01, 12.0).map(ms), max_size=6))),
        )
        for t in times
    ]
    return setup, trace


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scenarios())
def test_generated_traces_give_the_same_decisions(tmp_path: Path, case: tuple[Setup, list[TraceIncident]]) -> None:
    setup, trace = case
    db = tmp_path / f"gw-{time.perf_counter_ns()}.sqlite3"
    assert_same(run_gateway(setup, trace, db, restart_days=0.7), run_twin(setup, trace))
