"""The event lighting kernel (twin.kernels.lighting_events) against the per-minute kernel and the reference.

- Exactly, on the shared fixed input file (given arrivals and outages): every output of
  ``event_kernel`` equals ``lighting_block``'s bit for bit, and its counters, switch minutes and
  energy equal the plain-SimPy reference's (independent code).
- In distribution, with drawn motion (its own random stream): over many lamps, the mean
  per-lamp energy, boost energy and arrival count of the two kernels agree within
  :data:`Z_MAX` standard errors of the difference of means, and the mean arrival count equals
  the analytic Poisson mean (sum of the hourly rates over the lit minutes).
- The motion plan: per slot, chunk mean x alias law / piece length = the hour's rate (computed
  here independently), each chunk's CDF the Poisson law.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from twin.city import city_model, run_city
from twin.fixed_inputs import read_kernel_arrays
from twin.kernels.lighting import lighting_block
from twin.kernels.lighting_events import event_kernel
from twin.kernels.lighting_tables import night_tables
from twin.kernels.motion_plan import ALIAS_COLUMNS, motion_plan
from twin.reference import read_fixed_inputs, reference_programs, run_reference
from twin.replication import LightingInputs, prepare_lighting
from twin.scenario import load_scenario

FIXED = Path(__file__).with_name("data") / "fixed_inputs.json"
SEED = 12345
DAYS = 3
Z_MAX = 4.0  # |difference of means| / its standard error: a false alarm is ~6e-5 per quantity
STAT_LAMPS = 3000  # naxi-3000's district, 60 nights: ~11 boosts a lamp-night, ~2 M arrivals per kernel
STAT_DAYS = 60


def _block_args(inputs: LightingInputs, tables: tuple[np.ndarray, ...], given: Any, outages: Any) -> list[Any]:
    d = inputs.district
    p = inputs.programs
    ptr, start, end = outages
    return [
        SEED, 0, d.lamp_program, d.lamp_area, d.lamp_rated_w, d.lamp_standby_w, inputs.levels, inputs.first_lit,
        inputs.end_lit, tables, p.boost_level, p.boost_minutes, inputs.rates, inputs.dark_start, inputs.dark_end,
        ptr, start, end, True, given[0], given[1],
    ]  # fmt: skip


def test_event_kernel_equals_the_minute_kernel_and_the_reference_on_the_fixed_file(tiny_scenario: Path) -> None:
    loaded = load_scenario(tiny_scenario)
    inputs = prepare_lighting(loaded, DAYS)
    n = inputs.district.n_lamps
    arrivals, ptr, start, end = read_kernel_arrays(FIXED, n)
    tables = tuple(night_tables(inputs.levels, inputs.programs.boost_level, inputs.dark_start, inputs.dark_end))
    args = _block_args(inputs, tables, arrivals, (ptr, start, end))
    minute = lighting_block(*args)
    event = event_kernel(*args)
    names = ("counters", "energy", "baseline", "switch_on", "switch_off", "outage_dark", "by_night", "by_minute")
    names += ("boost_by_hour", "plain_rated")
    for name, a, b in zip(names, minute, event, strict=True):
        np.testing.assert_array_equal(b, a, err_msg=name)
    # ... and the plain-SimPy reference, independently (as tests/twin/test_reference.py does for the minute kernel).
    ref_arrivals, ref_outages = read_fixed_inputs(FIXED, n)
    d = inputs.district
    site = loaded.spec.site
    lamps = [
        {"program": int(d.lamp_program[i]), "area": int(d.lamp_area[i]), "rated_w": float(d.lamp_rated_w[i]),
         "standby_w": float(d.lamp_standby_w[i]), "age_h": 0.0}
        for i in range(n)
    ]  # fmt: skip
    ref = run_reference(
        SEED, inputs.first_day, inputs.days, site.latitude, site.longitude, list(inputs.offsets), lamps,
        reference_programs(loaded.policy, inputs.programs.names), inputs.rates, outages=ref_outages,
        arrivals=ref_arrivals,
    )  # fmt: skip
    counters, energy, _, switch_on, switch_off = event[:5]
    np.testing.assert_array_equal(switch_on, ref.switch_on)
    np.testing.assert_array_equal(switch_off, ref.switch_off)
    np.testing.assert_array_equal(counters[:, 0], ref.lit_minutes)
    np.testing.assert_array_equal(counters[:, 2], ref.dark_lit_minutes)
    np.testing.assert_array_equal(counters[:, 3], ref.arrivals)
    np.testing.assert_allclose(energy, ref.energy_wmin, rtol=1e-9)
    assert (event[5] > 0).any(), "the file darkens lit minutes with outages"


def _z(a: np.ndarray, b: np.ndarray) -> float:
    se = math.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
    return abs(float(a.mean() - b.mean())) / se


@pytest.fixture(scope="module")
def naxi_runs() -> tuple[Any, Any, Any, Any]:
    model = city_model(load_scenario(Path(__file__).resolve().parents[2] / "scenarios" / "naxi-3000.toml"), STAT_DAYS)
    minute = run_city(model, 1, STAT_LAMPS, threads=2)
    event = run_city(model, 2, STAT_LAMPS, threads=2, kernel=event_kernel)
    # Motion off (zero rates): the plain energy each lamp would use, to isolate the boost energy.
    plain = run_city(_quiet(model), 2, STAT_LAMPS, threads=2, kernel=event_kernel)
    return model, minute, event, plain


def test_event_kernel_matches_the_minute_kernel_in_distribution(naxi_runs: tuple[Any, Any, Any, Any]) -> None:
    model, minute, event, plain = naxi_runs
    # Outages come from the same failure stream per seed; use lamps without outages for boost energy.
    assert _z(event.counters[:, 3].astype(float), minute.counters[:, 3].astype(float)) < Z_MAX
    assert _z(event.energy, minute.energy) < Z_MAX
    boost_event = (event.energy - plain.energy)[event.failures == 0]
    plain_minute = run_city(_quiet(model), 1, STAT_LAMPS, threads=2)
    boost_minute = (minute.energy - plain_minute.energy)[minute.failures == 0]
    assert boost_event.mean() > 0.0
    assert _z(boost_event, boost_minute) < Z_MAX
    # The hourly profile of boost energy, district-wide: within 2% hour by hour where it matters.
    assert np.allclose(event.by_hour, minute.by_hour, rtol=0.02, atol=0.02 * minute.by_hour.max())
    # Everything motion does not touch is the same law and the same closed form: lit minutes equal
    # lamp by lamp where neither run had an outage.
    clean = (event.failures == 0) & (minute.failures == 0)
    np.testing.assert_array_equal(event.counters[clean][:, [0, 1, 2, 4]], minute.counters[clean][:, [0, 1, 2, 4]])


def _quiet(model: Any) -> Any:
    import dataclasses

    inputs = dataclasses.replace(model.inputs, rates=np.zeros_like(model.inputs.rates))
    return dataclasses.replace(model, inputs=inputs)


def test_event_kernel_arrivals_have_the_poisson_mean(naxi_runs: tuple[Any, Any, Any, Any]) -> None:
    """Mean arrivals per lamp = sum over lit minutes of rate(clock hour) / 60 (an independent sum)."""
    model, _, event, _ = naxi_runs
    inputs = model.inputs
    d = inputs.district
    k = np.arange(1440)
    per_minute = inputs.rates[:, (12 + k // 60) % 24] / 60.0  # [area, night minute]
    running = np.concatenate([np.zeros((per_minute.shape[0], 1)), np.cumsum(per_minute, axis=1)], axis=1)
    lo = inputs.first_lit[d.lamp_program]  # [lamp, night]
    hi = inputs.end_lit[d.lamp_program]
    area = d.lamp_area[:, None]
    expected = (running[area, hi] - running[area, lo]).sum(axis=1)
    got = event.counters[:, 3].astype(float)
    se = math.sqrt(expected.sum())  # Poisson: variance = mean, lamps independent
    assert abs(got.sum() - expected.sum()) < Z_MAX * se, (got.sum(), expected.sum())


def test_blocks_do_not_change_a_lamps_results(naxi_runs: tuple[Any, Any, Any, Any]) -> None:
    model, _, event, _ = naxi_runs
    again = run_city(model, 2, 700, first=300, threads=1, block=100, kernel=event_kernel)
    np.testing.assert_array_equal(again.energy, event.energy[300:1000])
    np.testing.assert_array_equal(again.counters, event.counters[300:1000])


def test_motion_plan_reproduces_the_per_minute_poisson_law() -> None:
    """Per slot, the chunk's Poisson mean x P(its piece) / the piece's slots = the hour's rate / 60."""
    rates = np.array([[0.0] * 12 + [3.0] * 6 + [60.0] * 5 + [600.0], [0.6] * 24])
    first_lit = np.array([[100, 0, 30], [700, 1300, 0]])  # a few windows: partial hours, a full night
    end_lit = np.array([[1000, 1440, 30], [1439, 1440, 0]])
    ptr, cdf, guide, alias, start, length = motion_plan(rates, first_lit, end_lit)
    scale = 2.0**32
    n_programs, n_nights = first_lit.shape
    for a in range(2):
        for p in range(n_programs):
            for n in range(n_nights):
                lo, hi = int(first_lit[p, n]), int(end_lit[p, n])
                got = np.zeros(1442)
                for ch in range(ptr[(a * n_programs + p) * n_nights + n], ptr[(a * n_programs + p) * n_nights + n + 1]):
                    mean = -math.log(cdf[ch, 0])  # P(N = 0) = exp(-mean)
                    pmf = [math.exp(-mean) * mean**k / math.factorial(k) for k in range(40)]
                    np.testing.assert_allclose(cdf[ch, :40], np.cumsum(pmf), rtol=1e-12, atol=1e-15)
                    law = np.zeros(ALIAS_COLUMNS)
                    for col in range(ALIAS_COLUMNS):
                        keep = float(int(alias[ch, col]) >> 32) / scale
                        law[col] += keep / ALIAS_COLUMNS
                        law[int(alias[ch, col]) & 0xFFFFFFFF] += (1.0 - keep) / ALIAS_COLUMNS
                    for j in range(ALIAS_COLUMNS):
                        if law[j] > 0:
                            got[start[ch, j] : start[ch, j] + int(length[ch, j])] += mean * law[j] / int(length[ch, j])
                    for b in range(guide.shape[1]):  # the search start never skips the answer
                        assert guide[ch, b] == 0 or cdf[ch, guide[ch, b] - 1] <= b / guide.shape[1]
                want = np.zeros(1442)
                slots = np.arange(lo + 1, hi + 1)
                want[slots] = rates[a, (12 + (slots - 1) // 60) % 24] / 60.0
                np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-9, err_msg=f"area {a} program {p} night {n}")


def test_motion_rate_beyond_the_cap_is_refused() -> None:
    with pytest.raises(ValueError, match=r"area 0, hour 0: 5000\.0 arrivals per lamp-hour, expected 0 to 960"):
        motion_plan(np.full((1, 24), 5000.0), np.zeros((1, 1), np.int64), np.ones((1, 1), np.int64))
