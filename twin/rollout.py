"""Policy rollout model: how long until every lamp runs (and has confirmed) a new policy.

Owns: a plain-SimPy model of one rollout as the gateway agent does it
(edge_agent/agent/policy_install.py: ``PolicyInstaller.receive``, ``PolicyInstaller.install``;
edge_agent/agent/lamps.py: ``Lamps.run_rollout``, ``Lamps._send_program``): its parameters
(``RolloutParams``), one replication (``simulate``), many (``replicate``) and their summary
(``aggregate``). Its two calibrations (``ci``, ``field``) and the comparison with the measured
fleet live in ``twin.rollout_calibration``.

The model, step by step:

* The centre publishes the signed bundle to the gateways one after another (``publish_s`` per
  gateway: the fleet controller awaits each PUBACK) and it reaches gateway ``g`` after a network
  latency.
* The gateway verifies, stores (fsync) and installs it: a CPU job of ``install_cpu_s``.
* The rollout loop then sends every unconfirmed lamp its program in chunks of ``chunk`` lamps; each
  chunk is a CPU job of ``send_cpu_s`` per lamp (encode, publish, broker). The retry clock of a lamp
  starts at its PUBACK. The loop body ends when the status summary (queued behind the programs on
  the same MQTT client) is acknowledged; the next tick is ``tick_s`` (0.5 s = ``rollout_retry_s /
  4``) later. Reports do not wake the loop.
* A program is lost with ``loss_down``, the lamp's report with ``loss_up``. A report that gets
  through costs ``report_cpu_s`` of CPU (lamp simulator, broker, gateway, fleet controller) and
  confirms the lamp when that job finishes (the centre sees it then; so does the gateway).
* An unconfirmed lamp is sent its program again at the first tick at least ``wait`` after its last
  PUBACK: wait = 2 s for the first three retries, then 4, 8 and 16 s (``retry_wait``, mirroring
  ``min(16, rollout_retry_s * 2 ** max(0, attempts - 3))`` in edge_agent/policy/retry.py).
* Gateway availability: a fraction of the gateways is killed at ``kill_at_s`` after the publish
  (0 = down from the start) and comes back after ``restart_s`` (uniform range). A restarted gateway
  re-reads the retained bundle, installs it again (a CPU job) and, having lost its in-memory view of
  the lamps, sends every lamp its program again. Messages a dead gateway had already handed to the
  broker are still delivered; reports reaching it while it is dead are not seen by it (the centre
  still sees them).
* CPU: with ``shared_cpu_cores`` set (the CI machine), all CPU jobs of all gateways, lamps, broker
  and controller queue on one pool of that many cores, each idle gateway process taking
  ``idle_cpu_per_gateway`` cores away (its timers and loops); with ``None`` (the field) each gateway
  has its own single-core CPU and the lamps' side costs nothing on it.

Must not import: typer, rich, matplotlib (the CLI plots), twin.rollout_calibration.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import simpy

from edge_agent.policy import retry

# ----- the retry schedule: the gateway's own constants (edge_agent.policy.retry) ----------------
ROLLOUT_RETRY_S = retry.FIRST_RETRY_S
RETRY_DOUBLE_AFTER = retry.RETRIES_AT_FIRST_INTERVAL
RETRY_MAX_S = retry.MAX_RETRY_S
TICK_S = retry.TICK_S
QUANTILES = (0.1, 0.5, 0.9)


def retry_wait(attempts: np.ndarray) -> np.ndarray:
    """Seconds after the last PUBACK before a lamp with ``attempts`` sends so far is due again
    (``edge_agent.policy.retry.retry_wait`` over an array; a test holds the two together)."""
    a = np.asarray(attempts, dtype=np.float64)
    wait = np.minimum(RETRY_MAX_S, ROLLOUT_RETRY_S * 2.0 ** np.maximum(0.0, a - RETRY_DOUBLE_AFTER))
    return np.where(a > 0, wait, 0.0)


@dataclass(frozen=True)
class RolloutParams:
    """Parameters of one rollout; see ``twin.rollout_calibration`` for where each value comes from."""

    gateways: int = 30
    lamps_per_gateway: int = 100
    loss_down: float = 0.0  # chance a program copy is lost before the lamp
    loss_up: float = 0.0  # chance the lamp's report is lost
    down: float = 0.0  # fraction of gateways killed during the rollout
    kill_at_s: float = 0.2  # when they are killed, s after the publish (0 = down from the start)
    restart_s: tuple[float, float] = (1.5, 1.5)  # how long they stay down (uniform range)
    horizon_s: float = 120.0  # lamps not confirmed by then are "left behind"
    # timing
    shared_cpu_cores: int | None = 2  # None: every gateway is its own single-core computer
    idle_cpu_per_gateway: float = 0.0  # cores each running gateway process uses while idle
    publish_s: float = 0.002  # centre: per-gateway publish of the bundle (serial)
    uplink_s: float = 0.001  # centre -> gateway latency (median, lognormal)
    install_cpu_s: float = 0.03  # gateway: verify, fsync, install
    send_cpu_s: float = 0.0005  # per program copy: encode, publish, broker
    report_cpu_s: float = 0.0003  # per confirmed report: lamp, broker, gateway, controller
    latency_s: float = 0.001  # gateway <-> lamp one-way latency (median, lognormal)
    latency_sigma: float = 0.5  # lognormal shape of the latencies
    puback_s: float = 0.002  # publish -> PUBACK at the gateway (median)
    chunk: int = 10  # lamps per CPU job (how finely gateways interleave on a shared CPU)
    tick_s: float = TICK_S
    tick_overhead_s: float = 0.0  # loop body when nothing is sent

    @property
    def lamps(self) -> int:
        return self.gateways * self.lamps_per_gateway


# ----- the model ----------------------------------------------------------------------------------
@dataclass
class RolloutResult:
    confirmed_at: np.ndarray  # per lamp: first time the centre saw it report the new version (inf: never)
    messages: int  # program copies sent + reports that got through
    retries: int  # program copies beyond the first per lamp per gateway incarnation
    horizon_s: float

    @property
    def lamps(self) -> int:
        return int(self.confirmed_at.size)

    @property
    def left_behind(self) -> int:
        return int(np.sum(self.confirmed_at > self.horizon_s))

    @property
    def convergence_s(self) -> float:
        """Time until every lamp confirmed (inf if some were left behind at the horizon)."""
        return math.inf if self.left_behind else float(self.confirmed_at.max())

    def quantiles(self) -> tuple[float, ...]:
        """10/50/90% confirmation times, computed the way fleet.py does (of confirmed lamps)."""
        t = np.sort(self.confirmed_at[self.confirmed_at <= self.horizon_s])
        if not t.size:
            return tuple(math.inf for _ in QUANTILES)
        return tuple(float(t[min(t.size - 1, int(q * t.size))]) for q in QUANTILES)

    def curve(self, grid: np.ndarray) -> np.ndarray:
        """Fraction of lamps confirmed at each time of ``grid``."""
        t = np.sort(self.confirmed_at)
        return np.searchsorted(t, grid, side="right") / max(1, t.size)

    def summary(self) -> dict[str, float]:
        q10, q50, q90 = self.quantiles()
        return {
            "convergence_s": self.convergence_s,
            "p10_s": q10,
            "p50_s": q50,
            "p90_s": q90,
            "messages": float(self.messages),
            "retries": float(self.retries),
            "left_behind": float(self.left_behind),
        }


class SharedCPU:
    """A processor-sharing pool of ``cores``: n jobs progress at min(1, cores / n) each (the OS
    scheduler sharing the CI machine among agents, lamps, broker and controller)."""

    def __init__(self, env: simpy.Environment, cores: float) -> None:
        self.env = env
        self.cores = cores
        self.jobs: dict[simpy.Event, float] = {}
        self.last = env.now
        self.wake = env.event()
        env.process(self.serve())

    def _advance(self) -> None:
        dt = self.env.now - self.last
        self.last = self.env.now
        if dt > 0 and self.jobs:
            done = dt * min(1.0, self.cores / len(self.jobs))
            for ev in self.jobs:
                self.jobs[ev] -= done

    def work(self, seconds: float) -> simpy.Event:
        self._advance()
        ev = self.env.event()
        self.jobs[ev] = seconds
        if not self.wake.triggered:
            self.wake.succeed()
        return ev

    def serve(self) -> Generator[simpy.Event, Any, None]:
        while True:
            self.wake = self.env.event()
            if self.jobs:
                rate = min(1.0, self.cores / len(self.jobs))
                yield self.env.timeout(max(0.0, min(self.jobs.values()) / rate)) | self.wake
            else:
                yield self.wake
            self._advance()
            for ev in [ev for ev, left in self.jobs.items() if left <= 1e-12]:
                del self.jobs[ev]
                ev.succeed()


class _Rollout:
    def __init__(self, p: RolloutParams, seed: int) -> None:
        self.p = p
        self.rng = np.random.default_rng(seed)
        self.env = simpy.Environment()
        self.confirmed = np.full(p.lamps, np.inf)
        self.messages = 0
        self.retries = 0
        self.shared: SharedCPU | None = None
        self.cpus: list[simpy.Resource] = []
        if p.shared_cpu_cores is None:
            self.cpus = [simpy.Resource(self.env, capacity=1) for _ in range(p.gateways)]
        else:
            free = p.shared_cpu_cores - p.gateways * p.idle_cpu_per_gateway
            self.shared = SharedCPU(self.env, max(free, 0.1 * p.shared_cpu_cores))

    def lognormal(self, median: float, n: int | None = None) -> Any:
        if median <= 0:
            return 0.0 if n is None else np.zeros(n)
        return median * np.exp(self.p.latency_sigma * self.rng.standard_normal(n))

    def cpu(self, g: int, seconds: float) -> Generator[simpy.Event, Any, None]:
        if self.shared is not None:
            yield self.shared.work(seconds)
            return
        with self.cpus[g].request() as req:
            yield req
            yield self.env.timeout(seconds)

    def run(self) -> RolloutResult:
        p = self.p
        n_down = round(p.down * p.gateways)
        victims = set(self.rng.choice(p.gateways, size=n_down, replace=False).tolist()) if n_down else set()
        for g in range(p.gateways):
            arrive = (g + 1) * p.publish_s + float(self.lognormal(p.uplink_s))
            down = None
            if g in victims:
                down = (p.kill_at_s, p.kill_at_s + float(self.rng.uniform(*p.restart_s)))
            self.env.process(self.gateway(g, arrive, down))
        self.env.run(until=p.horizon_s)
        return RolloutResult(self.confirmed, self.messages, self.retries, p.horizon_s)

    def gateway(self, g: int, arrive: float, down: tuple[float, float] | None) -> Generator[simpy.Event, Any, None]:
        yield self.env.timeout(arrive)
        if down is None:
            yield from self.incarnation(g, math.inf)
            return
        kill, back = down
        if arrive < kill:
            yield from self.incarnation(g, kill)
        yield self.env.timeout(max(0.0, back - self.env.now))
        yield self.env.timeout(float(self.lognormal(self.p.uplink_s)))  # the retained bundle
        yield from self.incarnation(g, math.inf)

    def incarnation(self, g: int, dies_at: float) -> Generator[simpy.Event, Any, None]:
        """One life of a gateway's agent process: install, then the rollout loop until done."""
        p, env = self.p, self.env
        L = p.lamps_per_gateway
        base = g * L
        born = env.now
        yield from self.cpu(g, p.install_cpu_s)
        if env.now >= dies_at:
            return
        attempts = np.zeros(L, dtype=np.int64)
        pushed = np.zeros(L)
        known = np.full(L, np.inf)  # when this incarnation saw the lamp's report
        while env.now < p.horizon_s:
            now = env.now
            due = np.flatnonzero((known > now) & (pushed + retry_wait(attempts) <= now))
            body_end = now + p.tick_overhead_s
            for start in range(0, due.size, p.chunk):
                lamps = due[start : start + p.chunk]
                yield from self.cpu(g, p.send_cpu_s * lamps.size)
                if env.now >= dies_at:
                    return
                self.send(g, base, lamps, attempts, pushed, known, born)
                body_end = float(pushed[lamps].max())  # the summary is acked behind the programs
            # next tick at which some lamp that will not have confirmed by then is due
            ready = pushed + retry_wait(attempts)
            waiting = known > ready
            if not waiting.any():
                return
            target = max(float(ready[waiting].min()), env.now)
            period = p.tick_s + p.tick_overhead_s
            tick = body_end + period * max(1, math.ceil((target - body_end) / period - 1e-12))
            if tick >= dies_at:
                return
            yield env.timeout(max(0.0, tick - env.now))

    def send(
        self,
        g: int,
        base: int,
        lamps: np.ndarray,
        attempts: np.ndarray,
        pushed: np.ndarray,
        known: np.ndarray,
        born: float,
    ) -> None:
        p, n, now = self.p, lamps.size, self.env.now
        self.retries += int(np.count_nonzero(attempts[lamps]))
        attempts[lamps] += 1
        pushed[lamps] = now + self.lognormal(p.puback_s, n)
        received = self.rng.random(n) >= p.loss_down
        reported = received & (self.rng.random(n) >= p.loss_up)
        self.messages += n + int(reported.sum())
        if reported.any():
            arrive = now + self.lognormal(p.latency_s, n) + self.lognormal(p.latency_s, n)
            self.env.process(self.reports(g, base, lamps[reported], arrive[reported], known))

    def reports(
        self, g: int, base: int, lamps: np.ndarray, arrive: np.ndarray, known: np.ndarray
    ) -> Generator[simpy.Event, Any, None]:
        """The reports of one chunk: network latency, then their processing (one CPU job)."""
        yield self.env.timeout(max(0.0, float(arrive.max()) - self.env.now))
        # CI: lamp simulator, broker, gateway and controller share the pool; field: the gateway's CPU
        yield from self.cpu(g, self.p.report_cpu_s * lamps.size)
        t = self.env.now
        np.minimum.at(self.confirmed, base + lamps, t)
        np.minimum.at(known, lamps, t)  # a dead incarnation's array: harmless


def simulate(params: RolloutParams, seed: int) -> RolloutResult:
    """One replication of a rollout; same (params, seed) -> same result."""
    return _Rollout(params, seed).run()


def replicate(params: RolloutParams, replications: int, seed: int) -> list[RolloutResult]:
    seeds = np.random.SeedSequence(seed).generate_state(replications)
    return [simulate(params, int(s)) for s in seeds]


def aggregate(results: list[RolloutResult]) -> dict[str, dict[str, float]]:
    """Median and 90% interval (5th-95th percentile) over replications, per summary figure."""
    out: dict[str, dict[str, float]] = {}
    rows = [r.summary() for r in results]
    for key in rows[0]:
        v = np.array([row[key] for row in rows])
        out[key] = {
            "median": float(np.median(v)),
            "lo90": float(np.percentile(v, 5)),
            "hi90": float(np.percentile(v, 95)),
        }
    return out


def params_dict(p: RolloutParams) -> dict[str, Any]:
    return asdict(p)
