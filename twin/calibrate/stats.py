"""Estimators and exact intervals for calibration, without scipy.

Owns: the gamma quantile (series and continued fraction for the regularized incomplete gamma,
bisection for its inverse), Garwood's exact Poisson interval, the exponential mean from
events over exposure (right-censoring allowed), and the acknowledgement model of
``twin.sim.dispatch`` fitted by maximum likelihood with a bootstrap interval.
Must not import: numba, simpy, matplotlib.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def _gamma_p(a: float, x: float) -> float:
    """Regularized lower incomplete gamma P(a, x) (Numerical Recipes 6.2)."""
    if x <= 0:
        return 0.0
    lead = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1:
        term = total = 1.0 / a
        n = a
        for _ in range(10_000):
            n += 1
            term *= x / n
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return min(1.0, total * math.exp(lead))
    tiny = 1e-300
    b = x + 1 - a
    c = 1 / tiny
    d = 1 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return max(0.0, 1.0 - math.exp(lead) * h)


def gamma_ppf(q: float, a: float) -> float:
    """The ``q`` quantile of Gamma(shape ``a``, scale 1)."""
    lo, hi = 0.0, max(1.0, a)
    while _gamma_p(a, hi) < q:
        hi *= 2
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _gamma_p(a, mid) < q:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class Estimate:
    """A fitted value with its two-sided interval at ``level``, and how it was obtained."""

    value: float
    lo: float
    hi: float
    level: float
    method: str
    n: int  # events (or observations) behind it

    def contains(self, x: float) -> bool:
        return self.lo <= x <= self.hi

    def scaled(self, factor: float) -> Estimate:
        return Estimate(self.value * factor, self.lo * factor, self.hi * factor, self.level, self.method, self.n)

    def inverted(self, factor: float = 1.0) -> Estimate:
        """``factor / x`` (a rate into a mean time): the interval's ends swap."""

        def inv(v: float) -> float:
            return math.inf if v == 0 else factor / v

        return Estimate(inv(self.value), inv(self.hi), inv(self.lo), self.level, self.method, self.n)


def poisson_rate(events: int, exposure: float, level: float = 0.95) -> Estimate:
    """Events per unit exposure with Garwood's exact interval (chi-square / gamma quantiles)."""
    if exposure <= 0:
        return Estimate(math.nan, math.nan, math.nan, level, "garwood", events)
    alpha = 1 - level
    lo = 0.0 if events == 0 else gamma_ppf(alpha / 2, events)
    hi = gamma_ppf(1 - alpha / 2, events + 1)
    return Estimate(events / exposure, lo / exposure, hi / exposure, level, "garwood", events)


def exponential_mean(events: int, total_time: float, level: float = 0.95) -> Estimate:
    """Mean of an exponential duration from ``events`` completed durations and ``total_time``
    (completed plus right-censored): total / events, exact interval (Garwood on the rate)."""
    rate = poisson_rate(events, total_time, level)
    est = rate.inverted()
    return Estimate(est.value, est.lo, est.hi, level, "exponential MLE, exact (chi-square)", events)


# ----- acknowledgements: twin.sim.dispatch's model -------------------------------------------------
# A notified responder acknowledges with probability p after an exponential delay of mean mu;
# a delay beyond the chain's ack timeout T is an escalation. Per notification: acked at d <= T
# (density p exp(-d/mu)/mu) or timed out (1 - p (1 - exp(-T/mu))).


def _ack_nll(mu: float, p: float, k: int, total_delay: float, timeouts: dict[float, int]) -> float:
    value = -k * math.log(p) + k * math.log(mu) + total_delay / mu
    for t, m in timeouts.items():
        value -= m * math.log(max(1e-300, 1 - p * (1 - math.exp(-t / mu))))
    return value


def _best_p(mu: float, k: int, timeouts: dict[float, int]) -> float:
    """p maximizing the likelihood at ``mu``: k/p = sum m_T F_T / (1 - p F_T), p <= 1."""
    f = {t: 1 - math.exp(-t / mu) for t in timeouts}

    def slope(p: float) -> float:
        return k / p - sum(m * f[t] / (1 - p * f[t]) for t, m in timeouts.items())

    if not timeouts or slope(1.0 - 1e-12) >= 0:
        return 1.0 - 1e-12
    lo, hi = 1e-9, 1.0 - 1e-12
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if slope(mid) > 0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _ack_mle(k: int, total_delay: float, timeouts: dict[float, int]) -> tuple[float, float]:
    """(p, mu) by golden-section search on log mu with p profiled out."""
    if k == 0:
        return 0.0, math.nan
    mean = total_delay / k
    a, b = math.log(max(mean, 1e-6) / 20), math.log(max(mean, 1e-6) * 20 + 1e-6)
    ratio = (math.sqrt(5) - 1) / 2

    def f(x: float) -> float:
        mu = math.exp(x)
        return _ack_nll(mu, _best_p(mu, k, timeouts), k, total_delay, timeouts)

    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(80):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = f(d)
    mu = math.exp(0.5 * (a + b))
    return _best_p(mu, k, timeouts), mu


def fit_acks(
    delays: np.ndarray, acked: np.ndarray, timeout: np.ndarray, level: float = 0.95, boot: int = 300, seed: int = 0
) -> tuple[Estimate, Estimate]:
    """``(ack_probability, ack_delay_mean)`` of notifications (delay in minutes where acked,
    each one's ack timeout in minutes): maximum likelihood, percentile bootstrap interval
    (notifications resampled)."""
    n = int(acked.size)

    def fit(idx: np.ndarray) -> tuple[float, float]:
        ok = acked[idx]
        timeouts: dict[float, int] = {}
        for t, m in zip(*np.unique(timeout[idx][~ok], return_counts=True), strict=True):
            timeouts[float(t)] = int(m)
        return _ack_mle(int(ok.sum()), float(delays[idx][ok].sum()), timeouts)

    if n == 0:
        nan = Estimate(math.nan, math.nan, math.nan, level, "none", 0)
        return nan, nan
    p, mu = fit(np.arange(n))
    rng = np.random.default_rng(seed)
    draws = np.array([fit(rng.integers(0, n, n)) for _ in range(boot)])
    q = [100 * (1 - level) / 2, 100 * (1 + level) / 2]
    p_lo, p_hi = np.nanpercentile(draws[:, 0], q)
    m_lo, m_hi = np.nanpercentile(draws[:, 1], q)
    method = f"MLE (exponential delay, escalation at the chain's ack timeout), percentile bootstrap x{boot}"
    return (
        Estimate(p, float(p_lo), float(min(1.0, p_hi)), level, method, n),
        Estimate(mu, float(m_lo), float(m_hi), level, method, int(acked.sum())),
    )


# ----- shares and lognormal delays -----------------------------------------------------------------
def _beta_cf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta (Numerical Recipes 6.4)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1 / (tiny if abs(d) < tiny else d)
    h = d
    for m in range(1, 10_000):
        for an in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1 + an * d
            d = 1 / (tiny if abs(d) < tiny else d)
            c = 1 + an / c
            c = tiny if abs(c) < tiny else c
            h *= d * c
        if abs(d * c - 1) < 1e-15:
            break
    return h


def _beta_i(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b)."""
    if x <= 0 or x >= 1:
        return 0.0 if x <= 0 else 1.0
    lead = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return lead * _beta_cf(a, b, x) / a
    return 1 - lead * _beta_cf(b, a, 1 - x) / b


def beta_ppf(q: float, a: float, b: float) -> float:
    """The ``q`` quantile of Beta(``a``, ``b``), by bisection."""
    lo, hi = 0.0, 1.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _beta_i(a, b, mid) < q else (lo, mid)
    return 0.5 * (lo + hi)


def share(k: int, n: int, level: float = 0.95) -> Estimate:
    """``k`` of ``n``: the share with its Clopper-Pearson exact interval."""
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, level, "clopper-pearson", 0)
    alpha = 1 - level
    lo = 0.0 if k == 0 else beta_ppf(alpha / 2, k, n - k + 1)
    hi = 1.0 if k == n else beta_ppf(1 - alpha / 2, k + 1, n - k)
    return Estimate(k / n, lo, hi, level, "clopper-pearson exact", n)


Z90 = 1.2815515655446004  # the standard normal's 90th percentile


def lognormal_quantiles(
    seconds: np.ndarray, level: float = 0.95, boot: int = 300, seed: int = 0
) -> tuple[Estimate, Estimate]:
    """``(median, p90)`` of positive delays, lognormal by maximum likelihood (the mean and the
    standard deviation of the logs: median = exp(mu), p90 = exp(mu + z90 sigma), the scenario's
    form); percentile bootstrap interval (delays resampled)."""
    logs = np.log(seconds)
    n = int(logs.size)
    median, p90 = math.exp(float(logs.mean())), math.exp(float(logs.mean() + Z90 * logs.std()))
    rng = np.random.default_rng(seed)
    draws = logs[rng.integers(0, n, (boot, n))]
    mu, sd = draws.mean(axis=1), draws.std(axis=1)
    q = [100 * (1 - level) / 2, 100 * (1 + level) / 2]
    m_lo, m_hi = np.exp(np.percentile(mu, q))
    p_lo, p_hi = np.exp(np.percentile(mu + Z90 * sd, q))
    method = f"lognormal MLE (logs' mean and sd), percentile bootstrap x{boot}"
    return (
        Estimate(median, float(m_lo), float(m_hi), level, method, n),
        Estimate(p90, float(p_lo), float(p_hi), level, method, n),
    )
