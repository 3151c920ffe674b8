"""One replication of a scenario: kernels and SimPy glued together, KPIs out.

Owns: the order of work for one replication (switch tables -> failure draws -> SimPy world ->
lighting kernel -> KPIs) and the seeds: one integer seed per replication, split with numpy's
``SeedSequence`` into the kernel, failure and SimPy streams, so a replication's result depends
only on (scenario, policy, seed, days) and never on the process or machine that ran it.

Must not import: typer, rich, dask, matplotlib (executors and reports live elsewhere).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from twin.answer_kpis import answer_kpis
from twin.district import DistrictArrays, ProgramArrays, build_district, program_arrays
from twin.kernels.failures import time_to_failure
from twin.kernels.lighting import simulate_lighting
from twin.kernels.lighting_tables import dark_windows, program_levels, sun_table, switch_table
from twin.scenario import AREAS, LoadedScenario, load_scenario, utc_offsets
from twin.sim.world import run_world

HOURS_PER_YEAR = 8766.0
FAILURE_DRAWS_PER_LAMP = 8


@dataclass(frozen=True)
class LightingInputs:
    """Everything the lighting kernel needs for a scenario and horizon (no randomness)."""

    programs: ProgramArrays
    district: DistrictArrays
    first_day: int
    days: int
    offsets: np.ndarray
    on: np.ndarray  # (P, N) local minutes of day
    off: np.ndarray
    levels: np.ndarray  # (P, N, 1440)
    first_lit: np.ndarray  # (P, N) night minutes
    end_lit: np.ndarray
    dark_start: np.ndarray  # (N,) night minutes
    dark_end: np.ndarray
    rates: np.ndarray  # (areas, 24) arrivals per lamp per hour


def light_district(
    seed: int,
    inputs: LightingInputs,
    outage_ptr: np.ndarray,
    outage_start: np.ndarray,
    outage_end: np.ndarray,
    record_switches: bool = False,
    tile: int = 1,
    arrivals: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[Any, ...]:
    """Run the lighting kernel over the prepared district (``tile`` copies of its lamps).

    ``arrivals`` (CSR ``(ptr[L+1], minutes)``, e.g. from ``twin.fixed_inputs``) replaces the
    kernel's own motion draws; ``None`` draws them from ``seed``.
    """
    d = inputs.district
    p = inputs.programs
    if arrivals is None:
        arrivals = (np.zeros(0, dtype=np.int64), np.zeros(0))
    elif tile != 1:
        raise ValueError("given arrivals are per lamp: tile must be 1")
    return simulate_lighting(
        seed,
        np.tile(d.lamp_program, tile),
        np.tile(d.lamp_area, tile),
        np.tile(d.lamp_rated_w, tile),
        np.tile(d.lamp_standby_w, tile),
        inputs.levels,
        inputs.first_lit,
        inputs.end_lit,
        p.boost_level,
        p.boost_minutes,
        inputs.rates,
        inputs.dark_start,
        inputs.dark_end,
        outage_ptr,
        outage_start,
        outage_end,
        record_switches,
        arrivals[0],
        arrivals[1],
    )


def prepare_lighting(loaded: LoadedScenario, days: int) -> LightingInputs:
    spec = loaded.spec
    programs = program_arrays(loaded.policy)
    district = build_district(loaded, programs)
    first_day = loaded.first_day
    offsets = np.array(utc_offsets(spec.site.timezone, first_day, days + 1))
    lat, lon = spec.site.latitude, spec.site.longitude
    on, off = switch_table(
        first_day,
        days,
        lat,
        lon,
        offsets,
        programs.on_kind,
        programs.on_value,
        programs.off_kind,
        programs.off_value,
    )
    levels, first_lit, end_lit = program_levels(
        on,
        off,
        programs.base_level,
        programs.step_minutes,
        programs.step_levels,
        programs.n_steps,
    )
    sun = sun_table(first_day, days + 1, lat, lon, offsets)
    dark_start, dark_end = dark_windows(sun, days)
    rates = np.array([spec.lamps.town_traffic, spec.lamps.village_traffic], dtype=np.float64)
    return LightingInputs(
        programs,
        district,
        first_day,
        days,
        offsets,
        on,
        off,
        levels,
        first_lit,
        end_lit,
        dark_start,
        dark_end,
        rates,
    )


def replication_seeds(scenario_seed: int, n: int) -> list[int]:
    """Independent seeds for replications 0..n-1 (SeedSequence spawn; executor-independent)."""
    children = np.random.SeedSequence(scenario_seed).spawn(n)
    return [int(c.generate_state(1, dtype=np.uint32)[0]) for c in children]


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else math.nan


def run_replication(scenario_path: str, policy_path: str | None, seed: int, days: int | None) -> dict[str, Any]:
    """Run one replication; returns {"kpis": {name: float}, "details": {...}} (picklable)."""
    loaded = load_scenario(scenario_path, policy_path)
    spec = loaded.spec
    days = days or spec.scenario.days
    inputs = prepare_lighting(loaded, days)
    district = inputs.district
    ss = np.random.SeedSequence(seed)
    k_seq, f_seq, s_seq = ss.spawn(3)
    kernel_seed = int(k_seq.generate_state(1, dtype=np.uint32)[0])
    failure_seed = int(f_seq.generate_state(1, dtype=np.uint32)[0])
    rng = np.random.default_rng(s_seq)

    f = spec.failures
    lo, hi = f.age_years
    ages_h = rng.uniform(lo, hi, district.n_lamps) * HOURS_PER_YEAR
    ttf = time_to_failure(
        failure_seed,
        ages_h,
        FAILURE_DRAWS_PER_LAMP,
        f.driver_mtbf_years * HOURS_PER_YEAR,
        f.wearout_shape,
        f.wearout_scale_years * HOURS_PER_YEAR,
    )
    night = np.arange(days)[None, :] * 1440.0
    lit_on = night + inputs.first_lit
    lit_off = night + inputs.end_lit
    world = run_world(loaded, district, ttf, lit_on, lit_off, days, rng)

    counters, energy, baseline, by_hour, by_night, _, _, outage_dark = light_district(
        kernel_seed, inputs, world.outage_ptr, world.outage_start, world.outage_end
    )
    horizon = days * 1440.0
    kpis: dict[str, float] = {}
    kpis["energy_kwh"] = float(energy.sum()) / 60_000.0
    kpis["baseline_kwh"] = float(baseline.sum()) / 60_000.0
    kpis["energy_saving"] = 1.0 - kpis["energy_kwh"] / kpis["baseline_kwh"]
    dark = counters[:, 1].sum()
    kpis["dark_hours_lit"] = float(counters[:, 2].sum() / dark) if dark else 1.0
    ends = np.minimum(world.outage_end, horizon)
    kpis["outage_lamp_hours"] = float((ends - world.outage_start).sum() / 60.0)
    kpis["outage_dark_lamp_hours"] = float(outage_dark.sum() / 60.0)
    kpis["lamp_failures"] = float(world.failures)
    kpis["repair_hours_mean"] = float(np.mean(world.repair_hours)) if world.repair_hours else 0.0
    kpis["repair_hours_p90"] = _pct(world.repair_hours, 90) if world.repair_hours else 0.0
    kpis["motion_boosts_per_lamp_night"] = float(counters[:, 3].sum() / max(1, district.n_lamps * days))

    warmup = spec.dispatch.warmup_days * 1440.0
    counted = [i for i in world.incidents if i.occurred >= warmup and not math.isnan(i.arrived)]
    kpis["incidents"] = float(len(counted))
    kpis["escalations"] = float(world.escalations)
    waits = [i.assigned - i.notified for i in counted]
    kpis["queue_wait_min_mean"] = float(np.mean(waits)) if waits else 0.0
    response: dict[str, list[float]] = {}
    by_kind: dict[str, list[float]] = {}
    medical_types = {n for n, k in spec.incidents.items() if k.per_resident_year > 0}
    for inc in counted:
        minutes = inc.arrived - inc.occurred
        response.setdefault(inc.kind, []).append(minutes)
        by_kind.setdefault(inc.kind, []).append(minutes)
        response.setdefault(f"{inc.kind}_{inc.area}", []).append(minutes)
    for key, values in response.items():
        for q in (50, 90, 95):
            kpis[f"{key}_p{q}_min"] = _pct(values, q)
    targets = {"town": spec.targets.town_minutes, "village": spec.targets.village_minutes}
    for area in AREAS:
        values = [i.arrived - i.occurred for i in counted if i.kind in medical_types and i.area == area]
        if values:
            kpis[f"within_target_{area}"] = float(np.mean(np.array(values) <= targets[area]))
    kpis.update(answer_kpis(counted, world.responders))
    for role, share in world.utilisation.items():
        kpis[f"utilisation_{role}"] = share
    kpis["gateway_msgs_per_s_mean"] = world.messages_total / (horizon * 60.0)
    kpis["gateway_msgs_per_min_peak"] = world.msgs_per_min_peak
    kpis["uplink_backlog_max"] = world.backlog_max

    details = {
        "energy_wmin_by_hour": by_hour.tolist(),
        "energy_wmin_by_night": by_night.tolist(),
        "response": by_kind,
        "lamp_x": district.lamp_x.tolist(),
        "lamp_y": district.lamp_y.tolist(),
        "lamp_outage_hours": [
            float((np.minimum(world.outage_end[a:b], horizon) - world.outage_start[a:b]).sum() / 60)
            for a, b in zip(world.outage_ptr[:-1], world.outage_ptr[1:], strict=True)
        ],
        "responders": [(r.x, r.y, r.role) for r in world.responders],
        "utilisation": world.utilisation,
    }
    return {"kpis": kpis, "details": details, "seed": seed, "days": days}
