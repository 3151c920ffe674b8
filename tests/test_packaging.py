"""What a gateway installs: the wheel holds the gateway (and the twin), never the dev tools."""

from __future__ import annotations

import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    from hatchling.builders.wheel import WheelBuilder

    out = tmp_path_factory.mktemp("wheel")
    built = list(WheelBuilder(str(ROOT)).build(directory=str(out), versions=["standard"]))
    assert len(built) == 1
    with zipfile.ZipFile(built[0]) as wheel:
        return wheel.namelist()


def test_the_wheel_holds_what_a_gateway_runs(wheel_names: list[str]) -> None:
    for needed in (
        "edge_agent/agent/app.py",
        "edge_agent/agent/cli.py",
        "edge_agent/store/db.py",
        "edge_agent/codec/frames.py",
        "edge_agent/codec/registers.py",
        "twin/cli.py",
    ):
        assert needed in wheel_names


def test_the_wheel_holds_no_dev_tools(wheel_names: list[str]) -> None:
    code = [name for name in wheel_names if name.endswith(".py")]
    assert not [name for name in code if name.startswith("devtools/")]
    assert not [name for name in code if name.startswith(("hardware/hil/", "hardware/firmware/"))]
    for word in ("chaos", "fleet", "bench_serial", "simdevices", "flaky_proxy", "demo", "mosquitto"):
        assert not [name for name in code if word in name], f"{word} is a dev tool, not part of a gateway"
    assert "edge_agent/bench.py" not in code


def test_a_plain_install_pulls_no_twin_dependencies() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = " ".join(project["dependencies"]).lower()
    for heavy in ("numpy", "numba", "matplotlib", "dask", "simpy"):
        assert heavy not in base
    assert {"numpy", "numba", "simpy"} <= {
        dep.split(">")[0].split("[")[0] for dep in project["optional-dependencies"]["twin"]
    }


def test_no_module_of_the_three_packages_is_over_600_lines() -> None:
    long = {
        str(path.relative_to(ROOT)): lines
        for package in ("edge_agent", "twin", "devtools")
        for path in (ROOT / package).rglob("*.py")
        if (lines := len(path.read_text().splitlines())) > 600
    }
    assert not long, f"split these modules by what they own: {long}"
