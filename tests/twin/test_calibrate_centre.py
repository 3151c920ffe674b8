"""Issue 21: ``twin calibrate --centre DSN --district naxi`` fits from the centre's database and
gives the same fit as reading the gateways' own stores.

Three gateways' stores with realistic history: two lived 60 days through the real Engine and
Store (test_calibrate.live_gateway: incidents, alerts and acks, lamp faults and repairs,
motion, uplink outages), one with a busy notification ledger (test_calibrate_channels:
deliveries per channel, answers per role). Each store is shipped north by the gateway's own
code (edge_agent/agent/history_north.py through the real outbox, in several rounds, every
message delivered twice: at-least-once) into the centre's handlers (centre/history.py) on
SQLite and PostgreSQL; then the fit from the stores and the fit from the centre must be
identical, value for value and interval for interval, and so must the scenario files written.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from test_calibrate import GATEWAYS, KNOWN, SCENARIOS, live_gateway
from test_calibrate_channels import ledger_store
from typer.testing import CliRunner

from centre.db import Database, open_database
from devtools.postgres import PostgresCluster
from centre.history import HANDLERS
from edge_agent.agent import topics
from edge_agent.agent.context import GatewayContext
from edge_agent.agent.history_north import HistoryNorth
from edge_agent.agent.outbound import Outbound
from edge_agent.clock import ManualClock
from edge_agent.store.db import Store
from twin.calibrate import Calibration, calibrate, fit_histories
from twin.calibrate.centre import read_centre
from twin.cli import app
from twin.scenario import LoadedScenario, load_scenario

assert GATEWAYS >= 2


@pytest.fixture(scope="module")
def pg_cluster() -> Iterator[PostgresCluster]:
    with PostgresCluster() as cluster:
        yield cluster


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """As tests/centre/conftest.py's: a fresh centre database, SQLite or PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'centre.db'}"
    cluster: PostgresCluster = request.getfixturevalue("pg_cluster")
    return cluster.create_database()


@pytest.fixture(scope="module")
def field(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("field")
    shutil.copytree(SCENARIOS / "policies", root / "policies")
    (root / "known.toml").write_text(KNOWN)
    known = load_scenario(root / "known.toml")
    stores = [root / "gw0.sqlite3", root / "gw1.sqlite3", root / "gw2.sqlite3"]
    live_gateway(known, 0, stores[0])
    live_gateway(known, 1, stores[1])
    ledger_store(stores[2], 11)
    return root / "known.toml", stores


def ship(path: Path, gw: str, db: Database) -> int:
    """The gateway's history north through its outbox into the centre, in rounds of at most
    ``limit`` messages, each message delivered twice. Messages shipped."""
    store = Store(path)
    clock = ManualClock()
    links = SimpleNamespace(uplink="north", north=object(), wake={"north": SimpleNamespace(set=lambda: None)})
    context = SimpleNamespace(gateway=gw, store=store, clock=clock, links=links, active=SimpleNamespace(version=1))

    def enqueue(topic: str, body: dict[str, Any], device: str, priority: int) -> None:
        Outbound._enqueue_north(cast(Outbound, SimpleNamespace(**vars(context))), topic, body, device, priority)

    north = HistoryNorth(cast(GatewayContext, context), enqueue)
    north.ship()
    assert north.ship() == 0  # everything queued once
    shipped = 0
    while batch := store.outbox.pending("north", limit=25):
        for message in batch:
            match = topics.match(gw, message.topic)
            assert match is not None and match[0].name == "history"
            for _ in range(2):
                with db.transaction() as tx:
                    HANDLERS["history"](tx, gw, json.loads(message.payload), clock.now())
        with store.transaction():
            store.outbox.forget([m.seq for m in batch])
        shipped += len(batch)
    store.close()
    return shipped


def same(a: Calibration, b: Calibration) -> None:
    assert a.days == b.days
    assert {k: asdict(v) for k, v in a.estimates.items()} == {k: asdict(v) for k, v in b.estimates.items()}
    assert {k: [asdict(e) for e in v] for k, v in a.hourly.items()} == {
        k: [asdict(e) for e in v] for k, v in b.hourly.items()
    }


def test_calibrate_from_the_centre_equals_calibrate_from_the_stores(
    field: tuple[Path, list[Path]], database_url: str, tmp_path: Path
) -> None:
    scenario, originals = field
    stores = [tmp_path / p.name for p in originals]
    for original, copy in zip(originals, stores, strict=True):
        shutil.copy(original, copy)  # shipping moves the store's marks: each test its own copy
    with open_database(database_url) as db:
        shipped = [ship(path, path.stem, db) for path in stores]
    assert min(shipped) >= 3 and shipped[2] > 25  # several tables, several rounds for the ledger
    known: LoadedScenario = load_scenario(scenario)
    from_stores = calibrate(originals, known)
    from_centre = fit_histories(read_centre(database_url, "naxi"), known)
    assert from_centre.gateways == ["centre:gw0", "centre:gw1", "centre:gw2"]
    # what the fit covers: every family of parameter, from each kind of history shipped
    for key in ("incidents.sos.per_resident_year", "dispatch.ack_probability", "failures.driver_mtbf_years",
                "failures.repair_minutes", "gateways.uplink_mtbf_hours", "gateways.uplink_outage_minutes",
                "channels.sms.median_seconds", "dispatch.answer.village_doctor.probability"):  # fmt: skip
        assert key in from_stores.estimates, key
    assert {"lamps.town_traffic", "lamps.village_traffic"} <= set(from_stores.hourly)
    same(from_stores, from_centre)

    # the command: the same scenario file from either source
    runner = CliRunner()
    a = runner.invoke(app, ["calibrate", *map(str, originals), "--base", str(scenario), "--out", str(tmp_path / "a" / "fit.toml")])
    assert a.exit_code == 0, a.output
    b = runner.invoke(
        app,
        ["calibrate", "--centre", database_url, "--district", "naxi", "--base", str(scenario),
         "--out", str(tmp_path / "b" / "fit.toml")],
    )  # fmt: skip
    assert b.exit_code == 0, b.output
    assert "the centre of naxi, 3 gateway(s)" in b.output
    assert (tmp_path / "a" / "fit.toml").read_text() == (tmp_path / "b" / "fit.toml").read_text()


def test_calibrate_centre_errors_are_clear(tmp_path: Path, field: tuple[Path, list[Path]]) -> None:
    scenario, stores = field
    runner = CliRunner()
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    open_database(empty).close()
    out = ["--base", str(scenario), "--out", str(tmp_path / "x.toml")]
    r = runner.invoke(app, ["calibrate", "--centre", empty, "--district", "naxi", *out])
    assert r.exit_code == 2 and "no gateway of district 'naxi' has sent history yet" in r.output
    r = runner.invoke(app, ["calibrate", "--centre", f"sqlite:///{tmp_path / 'new.db'}", *out])
    assert r.exit_code == 2 and "not migrated?" in r.output
    r = runner.invoke(app, ["calibrate", str(stores[0]), "--centre", empty, *out])
    assert r.exit_code == 2 and "either gateway stores or --centre" in r.output
