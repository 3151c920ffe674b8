"""Trust: the Numba lighting kernel against an independent plain-SimPy reference.

The reference (twin/reference.py) imports no kernel code and draws its own motion arrivals and
failures from the scenario. So the two are compared twice:

- on a shared fixed input file (tests/twin/data/fixed_inputs.json: arrivals and outages, read
  by each side with its own reader): identical switch minutes and counters, energy to 1e-9;
- in distribution, over independent replications of each: for every KPI the difference of the
  means is within ``Z_MAX`` standard errors of that difference (Welch). The same statistic on a
  deliberately wrong kernel (20 % more traffic, 30 % shorter driver MTBF) exceeds ``Z_MAX``: the
  test has the power to see errors of that size.
"""

from __future__ import annotations

import ast
import dataclasses
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_agent.policy.programs import compile_programs
from twin.fixed_inputs import read_kernel_arrays
from twin.kernels.failures import renewal_outages, time_to_failure
from twin.reference import (
    FailureModel,
    ReferenceResult,
    draw_outages,
    read_fixed_inputs,
    reference_programs,
    run_reference,
)
from twin.replication import LightingInputs, light_district, prepare_lighting
from twin.scenario import LoadedScenario, load_scenario

REPO = Path(__file__).resolve().parents[2]
FIXED = Path(__file__).with_name("data") / "fixed_inputs.json"
SEED = 12345
DAYS = 3
Z_MAX = 4.0  # |difference of means| / its standard error; a false alarm is ~6e-5 per KPI
FAILURES = FailureModel(driver_mtbf_h=150.0, wearout_shape=4.0, wearout_scale_h=1500.0, repair_mean_h=6.0)
REFERENCE_REPLICATIONS = 10  # 24 lamps x 3 nights each: ~3 s of plain SimPy
KERNEL_REPLICATIONS = 400
FAILURE_REPLICATIONS = 2000  # failure counts alone (no minute loop on either side)


def _ages(n: int) -> np.ndarray:
    return np.linspace(0.0, 2000.0, n)  # hours: the wear-out term matters for the oldest


def _reference_lamps(inputs: LightingInputs) -> list[dict[str, Any]]:
    d = inputs.district
    ages = _ages(d.n_lamps)
    return [
        {
            "program": int(d.lamp_program[i]),
            "area": int(d.lamp_area[i]),
            "rated_w": float(d.lamp_rated_w[i]),
            "standby_w": float(d.lamp_standby_w[i]),
            "age_h": float(ages[i]),
        }
        for i in range(d.n_lamps)
    ]


def _reference(loaded: LoadedScenario, inputs: LightingInputs, seed: int, **kwargs: Any) -> ReferenceResult:
    site = loaded.spec.site
    return run_reference(
        seed,
        inputs.first_day,
        inputs.days,
        site.latitude,
        site.longitude,
        list(inputs.offsets),
        _reference_lamps(inputs),
        reference_programs(loaded.policy, inputs.programs.names),
        inputs.rates,
        **kwargs,
    )


# ----- independence ---------------------------------------------------------------------------


def test_reference_imports_no_kernel_code() -> None:
    tree = ast.parse((REPO / "twin" / "reference.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
    forbidden = ("twin.kernels", "twin.replication", "twin.sim", "twin.fixed_inputs", "numba")
    assert not [m for m in imported if m.startswith(forbidden)], imported
    # ... nor transitively: importing the reference loads neither the kernels nor Numba.
    code = (
        "import sys, twin.reference; print(sorted(m for m in sys.modules if m.startswith(('twin.kernels', 'numba'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]", out.stdout


# ----- exact agreement on a fixed input file -------------------------------------------------


def test_kernel_equals_reference_on_the_fixed_input_file(tiny_scenario: Path) -> None:
    loaded = load_scenario(tiny_scenario)
    inputs = prepare_lighting(loaded, DAYS)
    n = inputs.district.n_lamps
    arrivals, ptr, start, end = read_kernel_arrays(FIXED, n)
    counters, energy, _, _, _, switch_on, switch_off, _ = light_district(
        SEED, inputs, ptr, start, end, record_switches=True, arrivals=arrivals
    )
    ref_arrivals, ref_outages = read_fixed_inputs(FIXED, n)
    ref = _reference(loaded, inputs, SEED, outages=ref_outages, arrivals=ref_arrivals)
    np.testing.assert_array_equal(switch_on, ref.switch_on)
    np.testing.assert_array_equal(switch_off, ref.switch_off)
    np.testing.assert_array_equal(counters[:, 0], ref.lit_minutes)
    np.testing.assert_array_equal(counters[:, 1], ref.dark_minutes)
    np.testing.assert_array_equal(counters[:, 2], ref.dark_lit_minutes)
    np.testing.assert_array_equal(counters[:, 3], ref.arrivals)
    np.testing.assert_allclose(energy, ref.energy_wmin, rtol=1e-9)
    # The file exercises what it should: outages darkening lit minutes, boosts, whole dark nights.
    assert ptr[-1] > 20 and arrivals[1].size > 1000
    assert (switch_on < 0).any() and (switch_on >= 0).mean() > 0.5
    plain = light_district(SEED, inputs, ptr, start, end, arrivals=(arrivals[0], arrivals[1][:0].copy()))
    assert (energy > plain[1] + 1e-6).sum() > n // 2, "the fixed arrivals must boost most lamps"


def test_given_arrivals_reproduce_the_kernels_own_draws(tiny_scenario: Path) -> None:
    """The fixed-input path is the same kernel: fed its own drawn stream, it gives the same result."""
    from twin.kernels.arrivals import lamp_arrivals

    inputs = prepare_lighting(load_scenario(tiny_scenario), DAYS)
    d = inputs.district
    streams = [
        lamp_arrivals(SEED, i, inputs.rates[d.lamp_area[i]], inputs.first_lit[p], inputs.end_lit[p])
        for i, p in enumerate(d.lamp_program)
    ]
    given = (np.cumsum([0] + [s.size for s in streams]).astype(np.int64), np.concatenate(streams))
    none = np.zeros(d.n_lamps + 1, dtype=np.int64), np.zeros(0), np.zeros(0)
    drawn = light_district(SEED, inputs, *none, record_switches=True)
    fixed = light_district(SEED + 1, inputs, *none, record_switches=True, arrivals=given)
    for a, b in zip(drawn, fixed, strict=True):
        np.testing.assert_array_equal(a, b)


# ----- agreement in distribution -------------------------------------------------------------

KPIS = ("energy_kwh", "arrivals", "lit_minutes", "failures", "switch_on", "switch_off", "nights_lit")


def _kpis(
    energy: np.ndarray, arrivals: np.ndarray, lit: np.ndarray, failures: int, on: np.ndarray, off: np.ndarray
) -> list[float]:
    lit_nights = on >= 0
    return [
        float(energy.sum()) / 60_000.0,
        float(arrivals.sum()),
        float(lit.sum()),
        float(failures),
        float(on[lit_nights].mean()),  # mean first lit night-minute of the lamp-nights that lit
        float(off[lit_nights].mean()),
        float(lit_nights.mean()),
    ]


def _kernel_replications(inputs: LightingInputs, failures: FailureModel, n: int) -> np.ndarray:
    ages = _ages(inputs.district.n_lamps)
    horizon = inputs.days * 1440.0
    rows = []
    for seed in range(n):
        ttf = time_to_failure(seed, ages, 8, failures.driver_mtbf_h, failures.wearout_shape, failures.wearout_scale_h)
        ptr, start, end = renewal_outages(seed, ttf, horizon, failures.repair_mean_h)
        counters, energy, _, _, _, on, off, _ = light_district(seed, inputs, ptr, start, end, record_switches=True)
        rows.append(_kpis(energy, counters[:, 3], counters[:, 0], int((start < horizon).sum()), on, off))
    return np.array(rows)


def _z(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Welch's statistic per column: difference of means over its standard error."""
    se = np.sqrt(a.var(axis=0, ddof=1) / len(a) + b.var(axis=0, ddof=1) / len(b))
    return np.asarray((a.mean(axis=0) - b.mean(axis=0)) / se)


@pytest.fixture(scope="module")
def reference_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[LoadedScenario, LightingInputs, np.ndarray]:
    from tests.twin.conftest import SCENARIOS, TINY

    where = tmp_path_factory.mktemp("tiny")
    (where / "policies").mkdir()
    (where / "policies" / "naxi-standard.toml").write_bytes(
        (SCENARIOS / "policies" / "naxi-standard.toml").read_bytes()
    )
    (where / "tiny.toml").write_text(TINY)
    loaded = load_scenario(where / "tiny.toml")
    inputs = prepare_lighting(loaded, DAYS)
    rows = []
    for r in range(REFERENCE_REPLICATIONS):
        ref = _reference(loaded, inputs, 1000 + r, failures=FAILURES)
        rows.append(
            _kpis(
                ref.energy_wmin, ref.arrivals, ref.lit_minutes, int(ref.failures.sum()), ref.switch_on, ref.switch_off
            )
        )
    return loaded, inputs, np.array(rows)


def test_kernel_and_reference_agree_in_distribution(
    reference_runs: tuple[LoadedScenario, LightingInputs, np.ndarray],
) -> None:
    _, inputs, ref = reference_runs
    kernel = _kernel_replications(inputs, FAILURES, KERNEL_REPLICATIONS)
    z = _z(kernel, ref)
    report = {
        k: f"kernel {a:.4g} ref {b:.4g} z {c:+.2f}"
        for k, a, b, c in zip(KPIS, kernel.mean(0), ref.mean(0), z, strict=True)
    }
    assert np.all(np.abs(z) < Z_MAX), report
    assert ref[:, KPIS.index("failures")].mean() > 5, "failures must be exercised"
    assert ref[:, KPIS.index("nights_lit")].mean() < 1.0, "some lamp-nights must be dark (outages)"


def test_failure_counts_agree_in_distribution(tiny_scenario: Path) -> None:
    """Failure counts alone, with many replications: the reference's hazard draws vs the kernel's."""
    ages = _ages(24)
    horizon = DAYS * 1440.0
    ref = np.array(
        [
            [sum(len(draw_outages(random.Random(r), a, FAILURES, horizon)) for a in ages)]
            for r in range(FAILURE_REPLICATIONS)
        ],
        dtype=float,
    )

    def kernel(model: FailureModel) -> np.ndarray:
        counts = []
        for seed in range(FAILURE_REPLICATIONS):
            ttf = time_to_failure(seed, ages, 8, model.driver_mtbf_h, model.wearout_shape, model.wearout_scale_h)
            _, start, _ = renewal_outages(seed, ttf, horizon, model.repair_mean_h)
            counts.append([float((start < horizon).sum())])
        return np.array(counts)

    assert abs(_z(kernel(FAILURES), ref)[0]) < Z_MAX
    # Power: a kernel with a 30 % shorter driver MTBF, or without the wear-out term, is caught.
    shorter = dataclasses.replace(FAILURES, driver_mtbf_h=FAILURES.driver_mtbf_h * 0.7)
    assert abs(_z(kernel(shorter), ref)[0]) > Z_MAX
    no_wearout = dataclasses.replace(FAILURES, wearout_scale_h=1e9)
    assert abs(_z(kernel(no_wearout), ref)[0]) > Z_MAX


def test_the_distribution_test_sees_a_wrong_traffic_rate(
    reference_runs: tuple[LoadedScenario, LightingInputs, np.ndarray],
) -> None:
    _, inputs, ref = reference_runs
    wrong = dataclasses.replace(inputs, rates=inputs.rates * 1.2)
    z = _z(_kernel_replications(wrong, FAILURES, KERNEL_REPLICATIONS), ref)
    assert abs(z[KPIS.index("arrivals")]) > Z_MAX


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
