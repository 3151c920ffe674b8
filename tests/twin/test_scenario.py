"""Scenario files: every problem is reported with the file and the key path, and a fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.errors import ConfigError
from twin.scenario import load_scenario


def _problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_scenario(path)
    return [f"{p.source}|{p.path}|{p.message}" for p in info.value.problems]


def test_shipped_scenarios_load() -> None:
    root = Path(__file__).resolve().parents[2] / "scenarios"
    names = {load_scenario(p).spec.scenario.name for p in root.glob("*.toml")}
    assert {"naxi-3000", "village-homecare", "failure-heavy"} <= names


def test_type_error_names_file_and_key_path(tiny_scenario: Path) -> None:
    text = tiny_scenario.read_text().replace("latitude = 28.77", 'latitude = "north"')
    tiny_scenario.write_text(text)
    (problem,) = _problems(tiny_scenario)
    assert problem.startswith(f"{tiny_scenario}|site.latitude|")


def test_cross_checks_against_the_policy_are_all_reported(tiny_scenario: Path) -> None:
    text = (
        tiny_scenario.read_text()
        .replace('role = "township_doctor"', 'role = "surgeon"')
        .replace('kpi = "dark_hours_lit"', 'kpi = "happiness"')
        .replace('timezone = "Asia/Shanghai"', 'timezone = "Mars/Olympus"')
    )
    tiny_scenario.write_text(text)
    problems = _problems(tiny_scenario)
    paths = {p.split("|")[1] for p in problems}
    assert paths == {"responders[1].role", "gates[0].kpi", "site.timezone"}
    surgeon = next(p for p in problems if "responders[1].role" in p)
    assert "village_doctor" in surgeon, "the message lists the roles the policy's chains use"


def test_missing_policy_file_names_the_key(tiny_scenario: Path) -> None:
    tiny_scenario.write_text(tiny_scenario.read_text().replace("naxi-standard", "nope"))
    (problem,) = _problems(tiny_scenario)
    assert "|policy.file|" in problem
    assert "relative to the scenario file" in problem


def test_unknown_key_is_refused(tiny_scenario: Path) -> None:
    tiny_scenario.write_text(tiny_scenario.read_text().replace("[district]", "[district]\ntown_lamp = 3"))
    (problem,) = _problems(tiny_scenario)
    assert "|district.town_lamp|" in problem


def test_lamps_from_csv_and_geojson(tiny_scenario: Path) -> None:
    from twin.district import build_district, program_arrays

    csv_file = tiny_scenario.parent / "lamps.csv"
    csv_file.write_text("id,lat,lon,area,rated_w\na,28.77,105.37,town,120\nb,28.80,105.40,village,\n")
    geo = tiny_scenario.parent / "lamps.geojson"
    geo.write_text(
        '{"type":"FeatureCollection","features":['
        '{"type":"Feature","geometry":{"type":"Point","coordinates":[105.38,28.78]},'
        '"properties":{"area":"village","gateway":"g1"}}]}'
    )
    for name, n in (("lamps.csv", 2), ("lamps.geojson", 1)):
        tiny_scenario.write_text(
            tiny_scenario.read_text().replace("[district]", f'[district]\nlamps_file = "{name}"', 1)
            if "lamps_file" not in tiny_scenario.read_text()
            else tiny_scenario.read_text().replace("lamps.csv", name)
        )
        loaded = load_scenario(tiny_scenario)
        district = build_district(loaded, program_arrays(loaded.policy))
        assert district.n_lamps == n
    # the CSV's first lamp sits on the site: 0 m east and north, its own rated power kept
    tiny_scenario.write_text(tiny_scenario.read_text().replace("lamps.geojson", "lamps.csv"))
    loaded = load_scenario(tiny_scenario)
    district = build_district(loaded, program_arrays(loaded.policy))
    assert abs(district.lamp_x[0]) < 1e-6
    assert district.lamp_rated_w[0] == 120.0
    assert district.lamp_rated_w[1] == loaded.spec.lamps.village_rated_w
