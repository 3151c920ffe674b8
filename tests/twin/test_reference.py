"""Trust: the Numba lighting kernel agrees with the plain-SimPy reference minute for minute.

Both sides get the same seed, the same motion arrival stream and the same outage intervals; the
kernel calls the jitted policy functions, the reference calls them as plain Python.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from edge_agent.policy.programs import compile_programs
from twin.kernels.failures import renewal_outages, time_to_failure
from twin.reference import reference_programs, run_reference
from twin.replication import LightingInputs, light_district, prepare_lighting
from twin.scenario import load_scenario

SEED = 12345


def _kernel_and_reference(scenario: Path, days: int) -> tuple[LightingInputs, tuple, object]:
    loaded = load_scenario(scenario)
    inputs = prepare_lighting(loaded, days)
    d = inputs.district
    ages = np.linspace(0, 30_000, d.n_lamps)
    ttf = time_to_failure(SEED, ages, 4, 200.0, 4.0, 50_000.0)  # many failures within days
    ptr, start, end = renewal_outages(SEED, ttf, days * 1440.0, 6.0)
    p = inputs.programs
    kernel = light_district(SEED, inputs, ptr, start, end, record_switches=True)
    programs = reference_programs(loaded.policy, p.names)
    lamps = [
        {
            "program": int(d.lamp_program[i]),
            "area": int(d.lamp_area[i]),
            "rated_w": float(d.lamp_rated_w[i]),
            "standby_w": float(d.lamp_standby_w[i]),
        }
        for i in range(d.n_lamps)
    ]
    outages = [list(zip(start[a:b], end[a:b], strict=True)) for a, b in itertools.pairwise(ptr)]
    site = loaded.spec.site
    reference = run_reference(
        SEED,
        inputs.first_day,
        days,
        site.latitude,
        site.longitude,
        list(inputs.offsets),
        lamps,
        programs,
        inputs.rates,
        outages,
    )
    assert ptr[-1] > 0, "the test must exercise outages"
    return inputs, kernel, reference


def test_kernel_matches_plain_simpy_reference(tiny_scenario: Path) -> None:
    _, kernel, ref = _kernel_and_reference(tiny_scenario, days=3)
    counters, energy, _, _, _, switch_on, switch_off, _ = kernel
    # Switch minutes: identical, lamp by lamp and night by night (outages included).
    np.testing.assert_array_equal(switch_on, ref.switch_on)
    np.testing.assert_array_equal(switch_off, ref.switch_off)
    # Integer counters: identical.
    np.testing.assert_array_equal(counters[:, 0], ref.lit_minutes)
    np.testing.assert_array_equal(counters[:, 1], ref.dark_minutes)
    np.testing.assert_array_equal(counters[:, 2], ref.dark_lit_minutes)
    np.testing.assert_array_equal(counters[:, 3], ref.arrivals)
    # Energy: the same per-minute powers; only the order of summation differs.
    np.testing.assert_allclose(energy, ref.energy_wmin, rtol=1e-12)
    assert counters[:, 3].sum() > 0, "motion boosts must be exercised"
    assert (switch_on >= 0).mean() > 0.5, "most lamp-nights must switch on"
    assert (switch_on < 0).any(), "some lamp must stay dark a whole night (outage)"


def test_stepwise_kernel_equals_gateway_whole_decision(tiny_scenario: Path) -> None:
    """The kernel's per-program level table equals the gateway's ``decide_level`` each minute."""
    loaded = load_scenario(tiny_scenario)
    inputs = prepare_lighting(loaded, 2)
    compiled = compile_programs(loaded.policy)
    site = loaded.spec.site
    for p, name in enumerate(inputs.programs.names):
        program = compiled[name]
        for night in range(2):
            for k in range(0, 1440, 7):
                minute_of_day = (720 + k) % 1440
                day = inputs.first_day + night + (1 if 720 + k >= 1440 else 0)
                expected = program.level_at(day, float(minute_of_day), site.latitude, site.longitude, 480.0)
                assert inputs.levels[p, night, k] == expected
