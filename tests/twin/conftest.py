"""Fixtures for the twin's tests: a tiny scenario written to a temporary directory."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = REPO / "scenarios"

TINY = """
[scenario]
name = "tiny"
seed = 7
start = "2025-06-18"
days = 4
replications = 2

[site]
latitude = 28.77
longitude = 105.37
timezone = "Asia/Shanghai"

[policy]
file = "policies/naxi-standard.toml"

[district]
town_lamps = 12
town_radius_m = 800
villages = 2
lamps_per_village = 6
village_ring_m = [3000, 5000]
lamps_per_gateway = 6

[failures]
driver_mtbf_years = 0.05
age_years = [0, 1]

[residents]
town = 200
village = 200

[incidents.sos]
per_resident_year = 5.0

[incidents.lamp_outage]

[[responders]]
role = "village_doctor"
per_village = 1
town = 1
local = true

[[responders]]
role = "township_doctor"
town = 1

[[responders]]
role = "repair_crew"
centre = 1

[[gates]]
name = "dark hours lit"
kpi = "dark_hours_lit"
op = ">="
limit = 0.5
"""


@pytest.fixture
def tiny_scenario(tmp_path: Path) -> Path:
    """A 24-lamp, 4-night scenario using the shipped standard policy (copied beside it)."""
    (tmp_path / "policies").mkdir()
    for name in ("naxi-standard.toml", "naxi-eco.toml"):
        shutil.copy(SCENARIOS / "policies" / name, tmp_path / "policies" / name)
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path
