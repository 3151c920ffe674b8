"""Raised -> acknowledged by a person: the answer KPIs, overall and per tier (responder role).

Owns: their computation from a replication's incidents. Seconds, as the telecare answer
targets are (``twin.kpis.ANSWER_TARGETS``: 97.5% within 60 s, 99% within 180 s).

* Overall, per alert: from the alert raised (the incident handed to dispatch) to its
  acknowledgement by a person, whoever in the chain it was: ``ack_p50_s``, ``ack_p90_s``,
  ``ack_within_60s``, ``ack_within_180s``.
* Per tier, per notification sent to a responder of the role: from that notification to that
  responder's acknowledgement: ``ack_p50_s_<role>``, ``ack_p90_s_<role>`` (of the
  notifications answered), ``ack_within_60s_<role>``, ``ack_within_180s_<role>`` (of all
  notifications: one never answered, because every channel failed, nobody answered or the
  answer came after the ack timeout, counts as not within).

Must not import: numba, twin.kernels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from twin.kpis import ANSWER_TARGETS
from twin.sim.dispatch import Incident, ResponderSpec


def _add(kpis: dict[str, float], suffix: str, seconds: Sequence[float], answered: Sequence[float]) -> None:
    """Percentiles of ``answered`` and shares within each target of ``seconds`` (inf: never)."""
    if not seconds:
        return
    if answered:
        for q in (50, 90):
            kpis[f"ack_p{q}_s{suffix}"] = float(np.percentile(answered, q))
    values = np.array(seconds)
    for limit in ANSWER_TARGETS:
        kpis[f"ack_within_{limit}s{suffix}"] = float(np.mean(values <= limit))


def answer_kpis(incidents: Sequence[Incident], responders: Sequence[ResponderSpec]) -> dict[str, float]:
    """The answer KPIs (module docstring) of the ``incidents`` counted."""
    kpis: dict[str, float] = {}
    raised = [(i.assigned - i.notified) * 60.0 for i in incidents if math.isfinite(i.assigned)]
    _add(kpis, "", raised, raised)
    by_tier: dict[str, list[float]] = {}
    for incident in incidents:
        for call in incident.calls:
            seconds = (call.answered - call.sent) * 60.0 if math.isfinite(call.answered) else math.inf
            by_tier.setdefault(responders[call.responder].role, []).append(seconds)
    for role, calls in sorted(by_tier.items()):
        _add(kpis, f"_{role}", calls, [s for s in calls if math.isfinite(s)])
    return kpis
