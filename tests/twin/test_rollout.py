"""The rollout model: calibrated against the measured fleet run, sane, deterministic, and fast."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from twin.cli import app
from twin.rollout import ROLLOUT_RETRY_S, retry_wait, simulate
from twin.rollout_calibration import CI, FIELD, FLEET_MEASUREMENTS, compare_with_fleet

TOLERANCE = 0.35  # relative, on convergence and median confirmation time


@pytest.fixture(scope="module")
def comparison() -> list[dict[str, object]]:
    return compare_with_fleet(replications=7, seed=1)


def test_retry_schedule_mirrors_the_agent() -> None:
    # edge_agent/policy/retry.py, as the agent's rollout loop uses it: 0 s for the first send,
    # 2 s three times, then 4, 8 and every 16 s
    assert retry_wait(np.arange(9)).tolist() == [0.0, 2.0, 2.0, 2.0, 4.0, 8.0, 16.0, 16.0, 16.0]


def test_model_reproduces_the_fleet_without_loss(comparison: list[dict[str, object]]) -> None:
    for row in comparison:
        if row["loss"]:
            continue
        measured, model = float(row["measured_convergence_s"]), float(row["model_convergence_s"])  # type: ignore[arg-type]
        assert abs(model / measured - 1) <= TOLERANCE, row
        if row["measured_quantiles_s"]:
            m50 = row["measured_quantiles_s"][1]  # type: ignore[index]
            assert abs(row["model_quantiles_s"][1] / m50 - 1) <= TOLERANCE, row  # type: ignore[index]


def test_model_reproduces_the_fleet_with_loss(comparison: list[dict[str, object]]) -> None:
    """With loss the finish is set by the retry schedule: it lands just after a multiple of 2 s
    (the number of retries the unluckiest lamp needed), so compare that structure: the same or a
    neighbouring multiple of 2 s, and within the model's spread widened by the tolerance."""
    for row in comparison:
        if not row["loss"]:
            continue
        measured, model = float(row["measured_convergence_s"]), float(row["model_convergence_s"])  # type: ignore[arg-type]
        lo, hi = float(row["model_convergence_lo90"]), float(row["model_convergence_hi90"])  # type: ignore[arg-type]
        assert abs(math.floor(model / 2) - math.floor(measured / 2)) <= 1, row
        assert lo * (1 - TOLERANCE) <= measured <= hi * (1 + TOLERANCE), row
        if not row["restarts"]:  # the step: ~90% in the first wave, the tail after a retry at ~2 s
            q10, _, q90 = row["model_quantiles_s"]  # type: ignore[misc]
            assert q10 < 2.0, row
            assert q90 < 3.0, row
            assert model % 2.0 < 1.0, row
        retries = float(row["model_retries"])  # type: ignore[arg-type]
        assert 0.5 * int(row["measured_retries"]) <= retries <= 2.0 * int(row["measured_retries"]), row  # type: ignore[call-overload]


def test_no_faults_no_retries_and_convergence_is_the_slowest_path() -> None:
    p = replace(FIELD, gateways=20, lamps_per_gateway=50, loss_down=0.0, loss_up=0.0, down=0.0)
    r = simulate(p, 3)
    assert r.retries == 0
    assert r.left_behind == 0
    assert r.messages == 2 * p.lamps
    assert r.convergence_s == pytest.approx(float(r.confirmed_at.max()))
    # the slowest path: last publish + install + a gateway's sends + latencies, well under a retry
    assert r.convergence_s < ROLLOUT_RETRY_S
    assert r.convergence_s > p.gateways * p.publish_s + p.install_cpu_s


def test_more_loss_more_retries() -> None:
    base = replace(CI, gateways=5, lamps_per_gateway=100)
    retries = [
        np.mean([simulate(replace(base, loss_down=x, loss_up=x), s).retries for s in range(3)])
        for x in (0.0, 0.05, 0.2)
    ]
    assert retries[0] == 0
    assert retries[0] < retries[1] < retries[2]


def test_same_seed_same_result() -> None:
    p = replace(CI, gateways=10, lamps_per_gateway=30, loss_down=0.05, loss_up=0.05, down=0.2)
    a, b = simulate(p, 42), simulate(p, 42)
    assert np.array_equal(a.confirmed_at, b.confirmed_at)
    assert (a.retries, a.messages) == (b.retries, b.messages)
    assert not np.array_equal(a.confirmed_at, simulate(p, 43).confirmed_at)


def test_a_gateway_down_past_the_horizon_leaves_its_lamps_behind() -> None:
    p = replace(FIELD, gateways=10, lamps_per_gateway=20, down=0.1, restart_s=(1e6, 1e6), horizon_s=60.0)
    r = simulate(p, 1)
    assert r.left_behind == 20
    assert math.isinf(r.convergence_s)


def test_measurements_cover_the_issue_table() -> None:
    assert len(FLEET_MEASUREMENTS) == 8


def test_cli_rollout_100k_lamps(tmp_path: Path) -> None:
    out = tmp_path / "ro"
    result = CliRunner().invoke(
        app,
        ["rollout", "--gateways", "1000", "--lamps-per-gateway", "100", "--replications", "2", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "rollout.json").read_text())
    assert doc["params"]["gateways"] == 1000
    assert len(doc["per_replication"]) == 2
    assert doc["summary"]["left_behind"]["median"] == 0
    assert doc["curve"]["median_fraction"][-1] == 1.0
    assert (out / "rollout.png").stat().st_size > 1000
