"""Trust: the twin's dispatch model reproduces M/M/c queueing (Erlang C).

The very ``Dispatcher`` the twin uses (``choose_responder`` from the policy, FIFO queue when all
are busy), with exponential arrivals and service, no travel and immediate acknowledgement.
docs/DOMAIN.md (Erlang C worked values): lambda=2.4, mu=0.7, c=4 -> Wq=1.7576; lambda=0.2, mu=0.1, c=3 -> Wq=4.444.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from typing import Any

import numpy as np
import pytest
import simpy

from twin.sim.dispatch import ChainSpec, Dispatcher, Incident, ResponderSpec
from twin.stats import batch_means_ci


def erlang_c_wq(lam: float, mu: float, c: int) -> float:
    a = lam / mu
    rho = a / c
    tail = a**c / math.factorial(c) / (1 - rho)
    p_wait = tail / (sum(a**k / math.factorial(k) for k in range(c)) + tail)
    return p_wait / (c * mu - lam)


def simulate_waits(lam: float, mu: float, c: int, customers: int, seed: int) -> list[float]:
    env = simpy.Environment()
    rng = np.random.default_rng(seed)
    responders = [ResponderSpec(0.0, 0.0, "crew", 30.0) for _ in range(c)]
    dispatcher = Dispatcher(env, responders, {"only": ChainSpec(("crew",), 2.0)}, rng)
    incidents: list[Incident] = []

    def arrivals() -> Generator[simpy.Event, Any, None]:
        for _ in range(customers):
            yield env.timeout(float(rng.exponential(1.0 / lam)))
            incident = Incident("job", "town", 0.0, 0.0, "only", env.now, 1.0 / mu)
            incidents.append(incident)
            env.process(dispatcher.respond(incident))

    env.process(arrivals())
    env.run()
    return [i.assigned - i.occurred for i in incidents]


@pytest.mark.parametrize(("lam", "mu", "c", "expected"), [(2.4, 0.7, 4, 1.7576), (0.2, 0.1, 3, 4.444)])
def test_mean_wait_matches_erlang_c(lam: float, mu: float, c: int, expected: float) -> None:
    assert erlang_c_wq(lam, mu, c) == pytest.approx(expected, abs=1e-3)
    waits = simulate_waits(lam, mu, c, customers=252_000, seed=2024)
    warm = waits[2_000:]  # cold start biases waits downward (docs/DOMAIN.md#known-answers-tests)
    mean, half = batch_means_ci(warm, batches=20)
    assert abs(mean - expected) <= half, f"Wq {mean:.4f} +- {half:.4f}, Erlang C {expected}"
    assert half < 0.15 * expected, "the run must be long enough for a meaningful interval"
