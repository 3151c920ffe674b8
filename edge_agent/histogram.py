"""A latency histogram with fixed buckets: plain counts, no dependencies.

Owns: counting observations into cumulative-ready buckets, so that the parts that time
something (the Modbus bus scheduler, the agent's rule runs) stay free of the metrics library;
``edge_agent.http.metrics`` turns these into Prometheus histograms at scrape time.
A leaf: imports nothing of ours (transports may use it, like ``clock`` and ``errors``).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

# seconds; a serial poll is tens of ms, a rule run tens of microseconds
BUS_BUCKETS_S: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
RULE_BUCKETS_S: tuple[float, ...] = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3, 2.5e-2)


@dataclass
class LatencyHistogram:
    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)  # per bucket (not cumulative); last is +Inf
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.total += seconds
        self.count += 1

    def cumulative(self) -> list[tuple[str, float]]:
        """(upper bound as Prometheus writes it, cumulative count), +Inf last."""
        out: list[tuple[str, float]] = []
        running = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            out.append(("+Inf" if bound == float("inf") else repr(bound), float(running)))
        return out
