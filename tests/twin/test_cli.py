"""CLI smoke tests on a tiny scenario: run and compare write what a planner opens."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from twin.cli import app

runner = CliRunner()


def test_run_writes_kpis_report_and_plots(tiny_scenario: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(tiny_scenario), "--out", str(out), "--workers", "1"])
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "kpis.json").read_text())
    assert doc["replications"] == 2
    assert len(doc["seeds"]) == 2
    energy = doc["kpis"]["energy_kwh"]
    assert energy["mean"] > 0
    assert len(energy["values"]) == 2
    assert 0 < doc["kpis"]["energy_saving"]["mean"] < 1
    for png in ("energy_by_hour.png", "response_times.png", "map.png", "utilisation.png"):
        assert (out / png).stat().st_size > 1000
        assert png in (out / "report.html").read_text()


def test_compare_gives_a_verdict_per_kpi(tiny_scenario: Path, tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    policies = tiny_scenario.parent / "policies"
    result = runner.invoke(
        app,
        [
            "compare",
            str(tiny_scenario),
            "--out",
            str(out),
            "--workers",
            "1",
            "--policy",
            str(policies / "naxi-standard.toml"),
            "--policy",
            str(policies / "naxi-eco.toml"),
            "--replications",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = {r["kpi"]: r for r in json.loads((out / "compare.json").read_text())["kpis"]}
    # Eco dims deeper and lights for less time: it must use significantly less energy.
    assert rows["energy_kwh"]["verdict"] == "better"
    assert rows["energy_kwh"]["b_mean"] < rows["energy_kwh"]["a_mean"]
    assert all(r["verdict"] in ("better", "worse", "no significant difference") for r in rows.values())


def test_invalid_scenario_exits_2_naming_the_key(tiny_scenario: Path, tmp_path: Path) -> None:
    tiny_scenario.write_text(tiny_scenario.read_text().replace("days = 4", "days = 0"))
    result = runner.invoke(app, ["run", str(tiny_scenario), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert "scenario.days" in result.output


def test_validate_writes_a_record_bound_to_the_policy(tiny_scenario: Path, tmp_path: Path) -> None:
    from edge_agent.policy.validation_record import check_validation_record, decode_validation_record

    policy = tiny_scenario.parent / "policies" / "naxi-standard.toml"
    out = tmp_path / "val"
    result = runner.invoke(
        app, ["validate", str(policy), "--scenario", str(tiny_scenario), "--out", str(out), "--workers", "1"]
    )
    assert result.exit_code == 0, result.output
    record = decode_validation_record((out / "validation.json").read_bytes())
    check_validation_record(record, policy.read_bytes())  # raises unless bound and passing
    # A gate that cannot hold makes validate fail with exit status 1.
    tiny_scenario.write_text(tiny_scenario.read_text().replace("limit = 0.5", "limit = 1.5"))
    result = runner.invoke(
        app, ["validate", str(policy), "--scenario", str(tiny_scenario), "--out", str(out), "--workers", "1"]
    )
    assert result.exit_code == 1
    assert not decode_validation_record((out / "validation.json").read_bytes()).passed
