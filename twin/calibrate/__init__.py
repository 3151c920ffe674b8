"""``twin calibrate``: gateway history (their SQLite stores) -> a fitted scenario.

Owns: fitting the scenario's field-facing parameters to what gateways recorded
(edge_agent/store/history.py) and writing them, with their intervals, as a scenario file.

Fitted, each with a two-sided interval at ``level`` (default 95%):

* incidents by kind (wearable event name): per resident-year (wearables in the census) or per
  day, Garwood exact Poisson; by local hour: rate per day of each hour, Garwood with a
  Bonferroni split over the 24 hours (simultaneous), written as the scenario's ``hourly``;
* acknowledgements: ``dispatch.ack_probability`` and ``ack_delay_minutes`` of the twin's own
  model (twin/sim/dispatch.py: ack with probability p after an exponential delay, escalation
  at the chain's ack timeout), maximum likelihood, percentile bootstrap;
* lamp failures: a constant hazard per lamp-hour at risk (Garwood), written as
  ``failures.driver_mtbf_years`` with the wear-out switched off (``wearout_scale_years`` =
  10,000: months of field data cannot identify a Weibull); fault-to-repair time as
  ``failures.repair_minutes`` (exponential, exact interval; censored at the end);
* motion: camera detections per lamp-hour by local hour and area (the lamp group of the
  camera's zone), Garwood, Bonferroni over the hours: ``lamps.{town,village}_traffic``;
* uplink: outages per up-hour -> ``gateways.uplink_mtbf_hours``; outage length ->
  ``gateways.uplink_outage_minutes`` (exponential, exact);
* acknowledged -> resolved times per rule, when gateways record ``resolved`` (sidecar only);
* channels and answers from the notification ledger (``twin.calibrate.channels``): per channel
  the delivery delay (lognormal median and p90) and failure probability, per role (tier) the
  answer delay and the share acknowledged: ``[channels.<name>]`` and ``[dispatch.answer.<role>]``.

The history is read from the gateways' stores (``stores.read_store``) or, identically, from the
district centre's mirror of it (``centre.read_centre``: ``twin calibrate --centre DSN``).
Everything else (site, district, responders, policy, gates) is the base scenario's.
Must not import: edge_agent.store/agent/engine (the stores are read as files), numba, simpy.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from twin.calibrate.channels import fit_channels
from twin.calibrate.stats import Estimate, exponential_mean, fit_acks, poisson_rate
from twin.calibrate.stores import GatewayHistory, read_store
from twin.scenario import AREAS, LoadedScenario, chain_ack_timeout_minutes

__all__ = ["Calibration", "Estimate", "calibrate", "fit_histories", "read_store"]

HOURS_PER_YEAR = 8766.0
WEAROUT_OFF_YEARS = 10_000.0


@dataclass
class Calibration:
    level: float
    gateways: list[str]
    days: float
    estimates: dict[str, Estimate] = field(default_factory=dict)  # scenario key path -> estimate
    hourly: dict[str, list[Estimate]] = field(default_factory=dict)  # key path -> 24 per-hour rates
    notes: dict[str, str] = field(default_factory=dict)

    def sidecar(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "gateways": self.gateways,
            "days": self.days,
            "estimates": {k: asdict(v) for k, v in self.estimates.items()},
            "hourly": {k: [asdict(e) for e in v] for k, v in self.hourly.items()},
            "notes": self.notes,
        }


def _hour_exposure(since: float, until: float, tz: ZoneInfo) -> np.ndarray:
    """Whole hours observed at each local hour of day (UTC hours inside [since, until))."""
    first, last = math.ceil(since / 3600.0), math.floor(until / 3600.0)
    out = np.zeros(24)
    for h in range(first, last):
        out[_local_hour(h * 3600.0, tz)] += 1
    return out


def _local_hour(ts: float, tz: ZoneInfo) -> int:
    return dt.datetime.fromtimestamp(ts, tz).hour


def _per_hour(counts: np.ndarray, exposure: np.ndarray, level: float) -> list[Estimate]:
    """Rate per exposure unit at each hour; simultaneous over the 24 (Bonferroni)."""
    each = 1 - (1 - level) / 24
    return [poisson_rate(int(c), float(e), each) for c, e in zip(counts, exposure, strict=True)]


def calibrate(
    stores: list[Path], base: LoadedScenario, until: float | None = None, level: float = 0.95, seed: int = 0
) -> Calibration:
    return fit_histories([read_store(p, until) for p in stores], base, level, seed)


def fit_histories(hist: list[GatewayHistory], base: LoadedScenario, level: float = 0.95, seed: int = 0) -> Calibration:
    """The fit itself, from gateway histories however read (the stores, or the centre's mirror)."""
    tz = ZoneInfo(base.spec.site.timezone)
    days = sum(max(0.0, h.until - h.since) for h in hist) / 86400.0
    cal = Calibration(level, [h.path for h in hist], days)
    _incidents(cal, hist, base, tz)
    _acks(cal, hist, base, seed)
    _failures(cal, hist)
    _motion(cal, hist, tz)
    _uplink(cal, hist)
    _resolves(cal, hist)
    estimates, notes = fit_channels(hist, level, seed)
    cal.estimates.update(estimates)
    cal.notes.update(notes)
    return cal


def _incidents(cal: Calibration, hist: list[GatewayHistory], base: LoadedScenario, tz: ZoneInfo) -> None:
    """Per kind: the rate per resident-year (wearable incidents; per day without wearables),
    and by local hour the rate per resident-day (gateway-day) of that hour."""
    level = cal.level
    wearables = [sum(1 for kind, _, _ in h.devices.values() if kind == "wearable") for h in hist]
    exposure = [_hour_exposure(h.since, h.until, tz) for h in hist]  # days observed, per local hour
    for name in sorted({name for h in hist for name, _ in h.incidents}):
        by_hour = np.zeros(24)
        for h in hist:
            for n, ts in h.incidents:
                if n == name:
                    by_hour[_local_hour(ts, tz)] += 1
        count = int(by_hour.sum())
        known = base.spec.incidents.get(name)
        per_resident = (known is None or known.per_resident_year > 0 or known.per_day == 0) and sum(wearables) > 0
        if per_resident:
            resident_days = sum((e * w for e, w in zip(exposure, wearables, strict=True)), np.zeros(24))
            resident_years = resident_days.sum() / 24 / 365  # each day counted once per hour
            cal.estimates[f"incidents.{name}.per_resident_year"] = poisson_rate(count, resident_years, level)
            cal.hourly[f"incidents.{name}.hourly"] = _per_hour(by_hour, resident_days, level)
            cal.notes[f"incidents.{name}.hourly"] = "events per resident-day in each local hour; hourly = weights"
        else:
            gateway_days = sum(exposure, np.zeros(24))
            cal.estimates[f"incidents.{name}.per_day"] = poisson_rate(count, gateway_days.sum() / 24 / len(hist), level)
            cal.notes[f"incidents.{name}.per_day"] = "per day over the calibrated gateways' area"
            cal.hourly[f"incidents.{name}.hourly"] = _per_hour(by_hour, gateway_days, level)
            cal.notes[f"incidents.{name}.hourly"] = "events per gateway-day in each local hour; hourly = weights"


def _acks(cal: Calibration, hist: list[GatewayHistory], base: LoadedScenario, seed: int) -> None:
    chains = base.policy.chains
    rows = [
        (n.acked_after / 60.0 if n.acked_after is not None else 0.0, n.acked_after is not None, n.chain)
        for h in hist
        for n in h.notifications
        if n.chain in chains
    ]
    if not rows:
        return
    delays = np.array([r[0] for r in rows])
    acked = np.array([r[1] for r in rows])
    timeout = np.array([chain_ack_timeout_minutes(base.policy, str(r[2])) for r in rows])
    p, mu = fit_acks(delays, acked, timeout, cal.level, seed=seed)
    cal.estimates["dispatch.ack_probability"] = p
    cal.estimates["dispatch.ack_delay_minutes"] = mu


def _failures(cal: Calibration, hist: list[GatewayHistory]) -> None:
    failures = repairs = 0
    at_risk_h = down_h = 0.0
    for h in hist:
        for lamp, (kind, _, _) in h.devices.items():
            if kind != "lamp":
                continue
            state, since = "repair", h.since
            for name, ts in h.faults.get(lamp, []):
                if name == state:
                    continue
                if name == "fault":
                    at_risk_h += (ts - since) / 3600
                    failures += 1
                else:
                    down_h += (ts - since) / 3600
                    repairs += 1
                state, since = name, ts
            if state == "fault":
                down_h += (h.until - since) / 3600  # still dark at the end: censored
            else:
                at_risk_h += (h.until - since) / 3600
    if at_risk_h <= 0:
        return
    rate = poisson_rate(failures, at_risk_h, cal.level)
    cal.estimates["failures.rate_per_lamp_hour"] = rate
    cal.estimates["failures.driver_mtbf_years"] = rate.inverted(1.0 / HOURS_PER_YEAR)
    cal.notes["failures.driver_mtbf_years"] = "constant hazard fitted; wear-out switched off (wearout_scale_years)"
    if failures:
        cal.estimates["failures.repair_minutes"] = exponential_mean(repairs, down_h * 60, cal.level)
        cal.notes["failures.repair_minutes"] = (
            "fault-to-repair at the gateway: includes detection, dispatch and travel (an upper bound on site time)"
        )


def _motion(cal: Calibration, hist: list[GatewayHistory], tz: ZoneInfo) -> None:
    counts = {area: np.zeros(24) for area in AREAS}
    lamp_hours = {area: np.zeros(24) for area in AREAS}
    for h in hist:
        lamps_in: dict[str, dict[str, int]] = {}
        for kind, group, zone in h.devices.values():
            if kind == "lamp" and zone is not None and group in AREAS:
                lamps_in.setdefault(zone, {}).setdefault(group, 0)
                lamps_in[zone][group] += 1
        cameras = {zone for kind, _, zone in h.devices.values() if kind == "camera" and zone in lamps_in}
        exposure = _hour_exposure(h.since, h.until, tz)
        for zone in cameras:
            groups = lamps_in[zone]
            area = max(groups, key=lambda g: groups[g])  # a zone's area: the group most of its lamps are in
            lamp_hours[area] += exposure * sum(groups.values())
        for hour, zone, count in h.motion:
            if zone in cameras:
                groups = lamps_in[zone]
                counts[max(groups, key=lambda g: groups[g])][_local_hour(hour, tz)] += count
    for area in AREAS:
        if lamp_hours[area].sum() > 0:
            cal.hourly[f"lamps.{area}_traffic"] = _per_hour(counts[area], lamp_hours[area], cal.level)
            cal.notes[f"lamps.{area}_traffic"] = "camera detections per lamp-hour in camera zones of this area"


def _uplink(cal: Calibration, hist: list[GatewayHistory]) -> None:
    outages = ended = 0
    up_h = down_h = 0.0
    for h in hist:
        up, since = True, h.since
        for ts, now_up in h.links:
            if now_up == up:
                continue
            if up:
                up_h += (ts - since) / 3600
                outages += 1
            else:
                down_h += (ts - since) / 3600
                ended += 1
            up, since = now_up, ts
        if up:
            up_h += (h.until - since) / 3600
        else:
            down_h += (h.until - since) / 3600
    if up_h > 0 and any(h.links for h in hist):
        cal.estimates["gateways.uplink_mtbf_hours"] = poisson_rate(outages, up_h, cal.level).inverted()
    if ended:
        cal.estimates["gateways.uplink_outage_minutes"] = exponential_mean(ended, down_h * 60, cal.level)


def _resolves(cal: Calibration, hist: list[GatewayHistory]) -> None:
    by_rule: dict[str, list[float]] = {}
    for h in hist:
        for rule, seconds in h.resolve_after_ack:
            by_rule.setdefault(rule, []).append(seconds / 60)
    for rule, minutes in by_rule.items():
        cal.estimates[f"resolve.{rule}.ack_to_resolved_minutes"] = exponential_mean(
            len(minutes), sum(minutes), cal.level
        )
        cal.notes[f"resolve.{rule}.ack_to_resolved_minutes"] = "sidecar only: includes travel, not service alone"
