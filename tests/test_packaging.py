"""What a gateway installs: the wheel holds the gateway (and the twin), never the dev tools or the
firmware, and every module in it imports from the installed wheel alone."""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from hatchling.builders.wheel import WheelBuilder

    out = tmp_path_factory.mktemp("wheel")
    built = list(WheelBuilder(str(ROOT)).build(directory=str(out), versions=["standard"]))
    assert len(built) == 1
    return Path(built[0])


@pytest.fixture(scope="module")
def wheel_names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def test_the_wheel_holds_the_gateway_the_twin_and_their_commands(wheel_names: list[str]) -> None:
    assert "edge_agent/__init__.py" in wheel_names
    assert "twin/__init__.py" in wheel_names
    assert "centre/migrations/001_initial.sql" in wheel_names  # the schema ships with the centre
    assert "centre/console/static/console.js" in wheel_names
    for command, target in PROJECT["scripts"].items():
        module = target.split(":")[0].replace(".", "/")
        assert f"{module}.py" in wheel_names or f"{module}/__init__.py" in wheel_names, command


def test_the_wheel_holds_no_dev_tools_and_no_firmware(wheel_names: list[str]) -> None:
    code = [name for name in wheel_names if name.endswith(".py")]
    assert {name.split("/")[0] for name in code} == {"edge_agent", "twin", "centre"}
    for word in ("chaos", "fleet", "bench_serial", "simdevices", "flaky_proxy", "demo", "mosquitto", "firmware"):
        assert not [name for name in code if word in name], f"{word} is a dev tool, not part of a gateway"


def test_a_plain_install_pulls_no_twin_dependencies() -> None:
    base = " ".join(PROJECT["dependencies"]).lower()
    for heavy in ("numpy", "numba", "matplotlib", "dask", "simpy"):
        assert heavy not in base
    assert {"numpy", "numba", "simpy"} <= {
        dep.split(">")[0].split("[")[0] for dep in PROJECT["optional-dependencies"]["twin"]
    }


IMPORT_EACH = """
import importlib, json, sys, traceback
failed = {}
for name in sys.argv[1:]:
    try:
        module = importlib.import_module(name)
    except BaseException:
        failed[name] = traceback.format_exc(limit=-3)
    else:
        if not module.__file__.startswith(sys.prefix):
            failed[name] = "imported from " + module.__file__ + ", not from the installed wheel"
print(json.dumps(failed))
"""


def test_every_module_of_the_wheel_imports_in_a_fresh_venv(wheel: Path, wheel_names: list[str], tmp_path: Path) -> None:
    """pip installs the wheel (no index, no dependencies) into a new venv that sees the
    dependencies of this environment but not the checkout; then each module is imported."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    clean = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        env=clean,
        cwd=tmp_path,
    )
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    ).stdout.strip()
    # the third-party dependencies, as directories only: this environment's .pth files (the
    # editable install's path to the checkout among them) are not read from there
    (Path(purelib) / "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    names = sorted(
        name.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        for name in wheel_names
        if name.endswith(".py") and not name.endswith("__main__.py")
    )
    assert len(names) > 50
    done = subprocess.run(
        [str(python), "-c", IMPORT_EACH, *names], capture_output=True, text=True, env=clean, cwd=tmp_path, timeout=300
    )
    assert done.returncode == 0, done.stderr
    failed = json.loads(done.stdout.strip().splitlines()[-1])
    assert not failed, "\n".join(f"{name}: {why}" for name, why in failed.items())
