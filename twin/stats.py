"""Statistics for replications: means with t confidence intervals, batch means, verdicts.

Owns: the small amount of statistics the reports and tests need, without scipy.
Must not import: numba, simpy, matplotlib.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

# Two-sided 95% Student t quantiles by degrees of freedom (1..30); normal beyond.
_T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
        2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
        2.060, 2.056, 2.052, 2.048, 2.045, 2.042]  # fmt: skip


def t95(df: int) -> float:
    if df < 1:
        return math.inf
    return _T95[df - 1] if df <= len(_T95) else 1.96


def mean_ci(values: Sequence[float]) -> tuple[float, float]:
    """(mean, half-width of the 95% CI); half-width is NaN with fewer than 2 finite values."""
    xs = [float(v) for v in values if math.isfinite(v)]
    if not xs:
        return math.nan, math.nan
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, math.nan
    var = sum((x - m) ** 2 for x in xs) / (len(xs) - 1)
    return m, t95(len(xs) - 1) * math.sqrt(var / len(xs))


def batch_means_ci(values: Sequence[float], batches: int = 20) -> tuple[float, float]:
    """Mean and 95% CI half-width of a correlated series by non-overlapping batch means."""
    size = len(values) // batches
    means = [sum(values[b * size : (b + 1) * size]) / size for b in range(batches)]
    return mean_ci(means)


def verdict(a: Sequence[float], b: Sequence[float], higher_is_better: bool) -> str:
    """Compare B against A: 'better', 'worse' or 'no significant difference' (Welch, 95%)."""
    xa = [float(v) for v in a if math.isfinite(v)]
    xb = [float(v) for v in b if math.isfinite(v)]
    if len(xa) < 2 or len(xb) < 2:
        return "no significant difference"
    ma, mb = sum(xa) / len(xa), sum(xb) / len(xb)
    va = sum((x - ma) ** 2 for x in xa) / (len(xa) - 1)
    vb = sum((x - mb) ** 2 for x in xb) / (len(xb) - 1)
    se = math.sqrt(va / len(xa) + vb / len(xb))
    if se == 0.0:
        if ma == mb:
            return "no significant difference"
        return "better" if (mb > ma) == higher_is_better else "worse"
    num = (va / len(xa) + vb / len(xb)) ** 2
    den = (va / len(xa)) ** 2 / (len(xa) - 1) + (vb / len(xb)) ** 2 / (len(xb) - 1)
    df = max(1, int(num / den)) if den > 0 else len(xa) + len(xb) - 2
    if abs(mb - ma) / se <= t95(df):
        return "no significant difference"
    return "better" if (mb > ma) == higher_is_better else "worse"
