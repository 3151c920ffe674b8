"""`just bench-centre` in its smallest form: the real `centre run` fed by two feeder processes
over a real Mosquitto, on SQLite and on PostgreSQL. Every message the feeders sent is in the
database exactly once, and the meters' energy is counted once (an independent sum: each lamp's
second report adds 50 Wh), and the result file holds what the README table needs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from centre.db import open_database
from devtools.mosquitto import mosquitto_binary

ROOT = Path(__file__).resolve().parents[2]
GATEWAYS, LAMPS, INTERVAL, SECONDS = 4, 10, 1.0, 2.0
TELEMETRY = int(GATEWAYS * LAMPS * SECONDS / INTERVAL)  # every lamp reports twice
ALERTS = 2 * 2  # one burst (at 1 s) in each of the two feeders: one alert of 2 changes each

pytestmark = pytest.mark.skipif(not mosquitto_binary(), reason="needs mosquitto")


def _bench(tmp_path: Path, *args: str) -> dict[str, object]:
    cmd = [
        sys.executable, "-m", "devtools.bench_centre", "--gateways", str(GATEWAYS), "--lamps", str(LAMPS),
        "--interval", str(INTERVAL), "--seconds", str(SECONDS), "--burst", "2", "--burst-every", "2",
        "--settle", "15", "--results", str(tmp_path / "results"), "--keep", str(tmp_path / "work"), *args,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "lost" in done.stdout and "doubled" in done.stdout
    result: dict[str, object] = json.loads((tmp_path / "results" / "bench-centre.json").read_text())
    return result


def _check_database(url: str) -> None:
    with open_database(url, migrate=False) as db:
        ids = db.query("SELECT count(*), count(DISTINCT msg_id) FROM seen_messages")[0]
        assert ids == (TELEMETRY + ALERTS, TELEMETRY + ALERTS)
        per_lamp = db.query("SELECT gateway, lamp, count(*) FROM lamp_telemetry GROUP BY gateway, lamp")
        assert len(per_lamp) == GATEWAYS * LAMPS
        assert {row[2] for row in per_lamp} == {2}
        reports, energy = db.query("SELECT sum(reports), sum(energy_wh) FROM lamp_hours")[0]
        assert reports == TELEMETRY
        assert energy == pytest.approx(50.0 * GATEWAYS * LAMPS)
        assert db.query("SELECT count(*) FROM alert_changes")[0][0] == ALERTS
        assert db.query("SELECT COALESCE(sum(count), 0) FROM rejects")[0][0] == 0


def _check_result(result: dict[str, object], database: str) -> None:
    assert result["name"] == "bench-centre"
    assert str(result["command"]).startswith("just bench-centre --gateways 4")
    machine = result["machine"]
    assert isinstance(machine, dict) and len(machine["loadavg"]) == 3
    extra = result["extra"]
    assert isinstance(extra, dict)
    assert extra["mode"] == "full" and len(extra["loadavg_before"]) == 3
    figures = extra["databases"][database]
    assert figures["sent"] == TELEMETRY + ALERTS and figures["telemetry"] == TELEMETRY
    assert (figures["lost"], figures["doubled"], figures["rejected"], figures["unacked"]) == (0, 0, 0, 0)
    assert figures["committed"] == TELEMETRY + ALERTS
    assert 0 < figures["lag_p50"] <= figures["lag_p99"] < 10
    assert 0 <= figures["receive_p50"] <= figures["receive_p99"] < 10
    assert figures["ingest_rate"] > 0 and figures["cpu_s"] > 0 and figures["bytes_per_lamp_day"] > 0
    assert result["columns"][:2] == ["database", "sent"]  # type: ignore[index]
    assert result["cells"][0][0] == database  # type: ignore[index]


def test_sqlite(tmp_path: Path) -> None:
    result = _bench(tmp_path, "--database", "sqlite")
    _check_database(f"sqlite:///{tmp_path / 'work' / 'centre.db'}")
    _check_result(result, "sqlite")


def test_postgresql(tmp_path: Path, pg_url: str) -> None:
    result = _bench(tmp_path, "--database", "postgresql", "--postgres-url", pg_url)
    _check_database(pg_url)
    _check_result(result, "postgresql")
