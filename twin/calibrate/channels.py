"""``twin calibrate``'s fit of the channels and the answers from the gateways' notification
ledger (table ``notifications``, one row per channel of each notification) and their
acknowledgements (``alert_log`` rows ``acknowledged``).

Owns: turning the ledger into the scenario's ``[channels.<name>]`` and
``[dispatch.answer.<role>]`` (twin/scenario_channels.py), each value with its interval:

* per channel: the delivery delay from the channel's due time (queued + the chain's ``after``) to
  the message reaching the person (the delivery report; for the app, the broker taking it),
  lognormal by median and p90 (``lognormal_quantiles``); the failure probability, failed of
  (reached + failed), Clopper-Pearson (rows cancelled, or still pending at the end, left out);
* per role (the twin's tier): the answer delay from the acknowledged notification's earliest
  arrival to the acknowledgement (the notification: the last one, by ``n``, of that alert to that
  responder queued before the ack), lognormal; and the share of reached notifications that
  the responder acknowledged, Clopper-Pearson, written as the tier's ``probability``.

A store without the ledger (a gateway from before the channels) is calibrated without these,
with a note. Must not import: edge_agent.store/agent/engine, numba, simpy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from twin.calibrate.stats import Estimate, lognormal_quantiles, share
from twin.calibrate.stores import Delivery, GatewayHistory

MIN_DELAYS = 5  # fewer delays than this: no lognormal fitted (a note says so)

# The scenario's key paths this module fits (``channels.<name>.<key>``, ``dispatch.answer.<role>.<key>``).
CHANNEL_KEYS = ("median_seconds", "p90_seconds", "failure")
ANSWER_KEYS = ("median_seconds", "p90_seconds", "probability")


def fit_channels(hist: Sequence[GatewayHistory], level: float, seed: int) -> tuple[dict[str, Estimate], dict[str, str]]:
    """Estimates by scenario key path, and notes (module docstring)."""
    estimates: dict[str, Estimate] = {}
    notes: dict[str, str] = {}
    older = [h.path for h in hist if not h.ledger]
    if older:
        notes["channels"] = (
            f"no notification ledger (table notifications) in {', '.join(older)}: a gateway from before the "
            "channels; its channels and answer delays are not fitted"
        )
    rows = [d for h in hist if h.ledger for d in h.deliveries]
    for channel in sorted({d.channel for d in rows}):
        mine = [d for d in rows if d.channel == channel]
        reached = [d for d in mine if d.arrived is not None]
        failed = sum(1 for d in mine if d.arrived is None and d.failed is not None)
        path = f"channels.{channel}"
        estimates[f"{path}.failure"] = share(failed, len(reached) + failed, level)
        _delays(estimates, notes, path, [d.arrived - d.due for d in reached if d.arrived is not None], level, seed)
        notes[f"{path}.median_seconds"] = (
            "due (queued + the chain's after) -> delivery report (app: the broker took it)"
        )
    _answers(estimates, notes, [h for h in hist if h.ledger], level, seed)
    return estimates, notes


def _delays(
    estimates: dict[str, Estimate], notes: dict[str, str], path: str, seconds: list[float], level: float, seed: int
) -> None:
    positive = np.array([s for s in seconds if s > 0])
    if positive.size < MIN_DELAYS:
        notes[f"{path}.median_seconds"] = f"only {positive.size} positive delays: not fitted"
        return
    median, p90 = lognormal_quantiles(positive, level, seed=seed)
    estimates[f"{path}.median_seconds"] = median
    estimates[f"{path}.p90_seconds"] = p90
    if positive.size < len(seconds):
        notes[f"{path}.p90_seconds"] = f"{len(seconds) - positive.size} delays <= 0 s left out (clocks)"


def _answers(
    estimates: dict[str, Estimate], notes: dict[str, str], hist: Sequence[GatewayHistory], level: float, seed: int
) -> None:
    delays: dict[str, list[float]] = {}
    reached: dict[str, int] = {}
    acked: dict[str, int] = {}
    for h in hist:
        notifications: dict[tuple[str, str, int], list[Delivery]] = {}
        sent: dict[tuple[str, str], dict[int, float]] = {}  # (alert, responder) -> n -> queued
        for d in h.deliveries:
            notifications.setdefault((d.alert_id, d.responder, d.n), []).append(d)
            sent.setdefault((d.alert_id, d.responder), {})[d.n] = d.queued
        answered: dict[tuple[str, str, int], float] = {}
        for alert, responder, ts in h.acks:
            before = [n for n, queued in sent.get((alert, responder), {}).items() if queued <= ts]
            if before:
                answered.setdefault((alert, responder, max(before)), ts)
        for key, ds in notifications.items():
            arrivals = [d.arrived for d in ds if d.arrived is not None]
            if not arrivals:
                continue
            role = ds[0].role
            reached[role] = reached.get(role, 0) + 1
            ack = answered.get(key)
            if ack is not None:
                acked[role] = acked.get(role, 0) + 1
                delays.setdefault(role, []).append(ack - min(arrivals))
    for role, count in sorted(reached.items()):
        path = f"dispatch.answer.{role}"
        estimates[f"{path}.probability"] = share(acked.get(role, 0), count, level)
        notes[f"{path}.probability"] = "acknowledged of the notifications that reached the responder"
        _delays(estimates, notes, path, delays.get(role, []), level, seed)
        notes.setdefault(f"{path}.median_seconds", "earliest arrival -> the responder's acknowledgement")
