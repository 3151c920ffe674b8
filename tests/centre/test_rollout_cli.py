"""`centre rollout` on a real SQLite file: bad flags and bundles refused by name, --detach, status, abort."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from centre.cli import app
from centre.db import open_database
from tests.centre.test_rollout_driver import signed

runner = CliRunner()


@pytest.fixture
def centre(tmp_path: Path) -> Path:
    path = tmp_path / "centre.toml"
    path.write_text('[database]\nurl = "sqlite:///centre.db"\n[rollout]\ngateway_timeout = "2m"\n')
    with open_database(f"sqlite:///{tmp_path / 'centre.db'}") as db:
        db.execute("INSERT INTO gateways (gateway, online) VALUES ('gw-a', 1), ('gw-b', 1), ('gw-c', 0)")
    (tmp_path / "v7.bundle").write_bytes(signed(7))
    return path


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--waves", "10%,x"], "--waves: entry 2 ('x')"),
        (["--abort-if", "rejected >> 1"], "--abort-if: at character 11"),
        (["--window", "22:00"], "--window: '22:00'"),
        (["--timeout", "soon"], "--timeout:"),
        (["--canary", "-1"], "--canary: -1"),
    ],
)
def test_bad_flags_are_named_and_nothing_is_created(centre: Path, flags: list[str], needle: str) -> None:
    code, out = invoke("rollout", str(centre.parent / "v7.bundle"), "-c", str(centre), "--detach", *flags)
    assert code == 2 and needle in out, out
    with open_database(f"sqlite:///{centre.parent / 'centre.db'}") as db:
        assert db.query("SELECT COUNT(*) FROM rollouts") == [(0,)]


def test_a_file_that_is_not_a_signed_bundle_is_refused(centre: Path) -> None:
    (centre.parent / "plain.toml").write_text("x = 1\n")
    code, out = invoke("rollout", str(centre.parent / "plain.toml"), "-c", str(centre), "--detach")
    assert code == 2 and "not a signed policy bundle" in out
    code, out = invoke("rollout", str(centre.parent / "missing"), "-c", str(centre))
    assert code == 2 and "cannot read it" in out


def test_detach_status_abort(centre: Path) -> None:
    code, out = invoke("rollout", str(centre.parent / "v7.bundle"), "-c", str(centre), "--detach", "--canary", "1")
    assert code == 0, out
    match = re.search(r"^(v7-[0-9a-f]{8})$", out, re.M)
    assert match is not None, out
    rid = match.group(1)
    assert "3 gateways, waves [1, 2]" in out  # every known gateway: the gateways table
    code, out = invoke("rollout", "status", "-c", str(centre))
    assert code == 0 and rid in out and "running" in out and "QUEUED=3" in out
    code, out = invoke("rollout", str(centre.parent / "v7.bundle"), "-c", str(centre), "--detach")
    assert code == 2 and "still active" in out
    code, out = invoke("rollout", "abort", rid, "-c", str(centre))
    assert code == 0, out
    code, out = invoke("rollout", "status", rid, "-c", str(centre))
    assert code == 1 and "aborted" in out and "CANCELED=3" in out and "aborted by an operator" in out
    code, out = invoke("rollout", "follow", "-c", str(centre))  # an ended rollout: its end, at once
    assert code == 1 and rid in out and "aborted" in out
    code, out = invoke("rollout", "abort", rid, "-c", str(centre))
    assert code == 1 and "already ended" in out
    code, out = invoke("rollout", "status", "v9-nothing", "-c", str(centre))
    assert code == 1 and "no such rollout" in out
