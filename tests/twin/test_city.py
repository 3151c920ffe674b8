"""The twin at city scale: blocks of lamps on threads give exactly the serial results.

- threads over lamp blocks == one thread, bit for bit (every per-lamp output and profile);
- a lamp's results do not depend on the block it is in, nor on the other lamps simulated: a
  block-aligned slice alone == the same lamps inside a larger run, and the block kernel equals
  the whole-district kernel (``simulate_lighting``) lamp for lamp;
- per-lamp failure streams (``lamp_outages``) agree in distribution with the reference's own
  hazard draws (``twin.reference.draw_outages``);
- the figures are written as JSON rows.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from twin.bench import BenchRow, record_rows
from twin.city import block_plan, city_model, run_city
from twin.kernels.failures import lamp_outages
from twin.reference import FailureModel, draw_outages
from twin.replication import FAILURE_DRAWS_PER_LAMP, light_district
from twin.scenario import load_scenario

DAYS = 4


def test_block_plan_cuts_at_multiples_of_the_block() -> None:
    assert block_plan(0, 7, 3) == [(0, 3), (3, 3), (6, 1)]
    assert block_plan(4, 6, 3) == [(4, 2), (6, 3), (9, 1)]
    assert block_plan(0, 0, 3) == []


def test_threads_give_the_serial_result_bit_for_bit(tiny_scenario: Path) -> None:
    model = city_model(load_scenario(tiny_scenario), DAYS)
    serial = run_city(model, 5, 300, threads=1, block=16)
    parallel = run_city(model, 5, 300, threads=2, block=16)
    assert serial.blocks == parallel.blocks == 19
    assert serial.equals(parallel)
    assert serial.failures.sum() > 0, "failures must be exercised (the tiny scenario's MTBF is weeks)"
    assert serial.counters[:, 3].sum() > 0, "motion must be exercised"
    other_seed = run_city(model, 6, 300, threads=2, block=16)
    assert not np.array_equal(serial.energy, other_seed.energy)


def test_a_slice_alone_equals_the_same_lamps_in_a_larger_run(tiny_scenario: Path) -> None:
    model = city_model(load_scenario(tiny_scenario), DAYS)
    whole = run_city(model, 9, 400, threads=2, block=50)
    alone = run_city(model, 9, 100, first=150, threads=1, block=50)
    for name in ("counters", "energy", "baseline", "outage_dark", "failures"):
        assert np.array_equal(getattr(alone, name), getattr(whole, name)[150:250]), name
    # The district is tiled: lamp g has the attributes of district lamp g % 24, its own draws.
    assert not np.array_equal(whole.energy[:24], whole.energy[24:48])


def test_the_block_kernel_is_the_district_kernel_lamp_for_lamp(tiny_scenario: Path) -> None:
    """Blocks change nothing per lamp: the same outages through ``simulate_lighting`` (one block)."""
    model = city_model(load_scenario(tiny_scenario), DAYS)
    inputs = model.inputs
    n = inputs.district.n_lamps
    f = model.failures
    ptr, start, end = lamp_outages(
        3, 0, n, f.age_lo_h, f.age_hi_h, FAILURE_DRAWS_PER_LAMP, f.driver_mtbf_h, f.wearout_shape,
        f.wearout_scale_h, f.repair_mean_h, DAYS * 1440.0,
    )  # fmt: skip
    assert len(start) > 0
    counters, energy, baseline, by_hour, by_night, _, _, outage_dark = light_district(3, inputs, ptr, start, end)
    blocks = run_city(model, 3, n, threads=2, block=5)
    assert np.array_equal(blocks.counters, counters)
    assert np.array_equal(blocks.energy, energy)
    assert np.array_equal(blocks.baseline, baseline)
    assert np.array_equal(blocks.outage_dark, outage_dark)
    assert np.array_equal(blocks.failures, np.diff(ptr))
    np.testing.assert_allclose(blocks.by_night, by_night, rtol=1e-12)  # summed per block, then in order
    np.testing.assert_allclose(blocks.by_hour, by_hour, rtol=1e-12)


def test_lamp_outages_are_per_lamp_streams() -> None:
    args = (0.0, 8 * 8766.0, 8, 2000.0, 4.0, 20000.0, 6.0, 365 * 1440.0)
    ptr, start, end = lamp_outages(1, 0, 100, *args)
    ptr2, start2, end2 = lamp_outages(1, 40, 20, *args)
    assert np.array_equal(np.diff(ptr2), np.diff(ptr)[40:60])
    assert np.array_equal(start[ptr[40] : ptr[60]], start2)
    assert np.array_equal(end[ptr[40] : ptr[60]], end2)
    assert np.all(end > start)
    with pytest.raises(ValueError, match="max_failures"):
        lamp_outages(1, 0, 1, 0.0, 1.0, 200, 2000.0, 4.0, 20000.0, 6.0, 1440.0)


def test_lamp_outages_agree_with_the_reference_hazard_in_distribution() -> None:
    """Failures per lamp-year: the kernel's per-lamp streams vs the reference's rejection draws."""
    model = FailureModel(driver_mtbf_h=3000.0, wearout_shape=4.0, wearout_scale_h=20000.0, repair_mean_h=6.0)
    horizon = 365 * 1440.0
    lamps = 4000
    ages = np.random.default_rng(1).uniform(0.0, 30000.0, lamps)
    rng = random.Random(2)
    ref = np.array([len(draw_outages(rng, float(a), model, horizon)) for a in ages], dtype=float)

    def kernel(age_hi: float, mtbf: float) -> np.ndarray:
        ptr, _, _ = lamp_outages(7, 0, lamps, 0.0, age_hi, 8, mtbf, 4.0, 20000.0, 6.0, horizon)
        return np.diff(ptr).astype(float)

    def z(a: np.ndarray, b: np.ndarray) -> float:
        return float((a.mean() - b.mean()) / np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)))

    assert abs(z(kernel(30000.0, 3000.0), ref)) < 4.0
    assert abs(z(kernel(30000.0, 2100.0), ref)) > 4.0  # 30 % shorter MTBF is seen
    assert abs(z(kernel(5000.0, 3000.0), ref)) > 4.0  # younger lamps (less wear-out) are seen


def test_figures_are_recorded_as_rows(tmp_path: Path) -> None:
    rows = [
        BenchRow("3,000 lamps x 365 nights", "0.41 s", "note", "<= 0.5 s", True, 0.41, "s"),
        BenchRow("identical", "identical", aim="identical", met=True),
        BenchRow("scenario", "x.toml"),
    ]
    note = record_rows("twin-bench", "t", "twin bench", rows, {"loadavg_start": [1.0]}, results=tmp_path)
    assert str(tmp_path) in note
    doc = json.loads((tmp_path / "twin-bench.json").read_text())
    assert doc["command"] == "twin bench"
    assert doc["rows"][0] == {
        "what": "3,000 lamps x 365 nights", "figure": "0.41 s", "aim": "<= 0.5 s", "met": True, "value": 0.41,
        "unit": "s",
    }  # fmt: skip
    assert [r["what"] for r in doc["rows"]] == ["3,000 lamps x 365 nights", "identical"]


def test_bench_help_lists_scale() -> None:
    from twin.cli import app

    result = CliRunner().invoke(app, ["bench", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for option in ("--scale", "--threads", "--province-lamps", "--workers", "--memory-limit", "--record"):
        assert option in result.output


def test_warm_builds_the_kernel_cache() -> None:
    from twin.cli import app

    result = CliRunner().invoke(app, ["warm"])
    assert result.exit_code == 0, result.output
    assert "kernels ready" in result.output
