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
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from test_calibrate import GATEWAYS, KNOWN, SCENARIOS, live_gateway
from test_calibrate_channels import ledger_store
from typer.testing import CliRunner

from centre.db import Database, open_database
from centre.history import HANDLERS
from devtools.postgres import PostgresCluster
from edge_agent.agent import topics
from edge_agent.agent.context import GatewayContext
from edge_agent.agent.history_north import HistoryNorth
from edge_agent.agent.outbound import Outbound
from edge_agent.clock import ManualClock
from edge_agent.store.db import Store
from twin.calibrate.centre import read_centre
from twin.cli import app
from twin.scenario import load_scenario

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
    """The gateway's history north through its outbox into the centre, in rounds of 25
    messages, those of the first round delivered twice. Messages shipped."""
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
            for _ in range(2 if shipped == 0 else 1):  # the first round twice: at-least-once
                with db.transaction() as tx:
                    HANDLERS["history"](tx, gw, json.loads(message.payload), clock.now())
        with store.transaction():
            store.outbox.forget([m.seq for m in batch])
        shipped += len(batch)
    store.close()
    return shipped


def run_calibrate(*args: str) -> tuple[str, dict[str, Any]]:
    """``twin calibrate ARGS --out DIR/fit.toml``: the output, and the sidecar (its source labels dropped)."""
    result = CliRunner().invoke(app, ["calibrate", *args])
    assert result.exit_code == 0, result.output
    out = Path(args[args.index("--out") + 1])
    sidecar = json.loads(out.with_name(out.name + ".fit.json").read_text())
    sidecar.pop("gateways")
    return result.output, sidecar


@pytest.fixture(scope="module")
def from_stores(field: tuple[Path, list[Path]], tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """The fit from the gateways' own stores: (scenario file, sidecar as canonical JSON)."""
    scenario, stores = field
    out = tmp_path_factory.mktemp("a") / "fit.toml"
    _, sidecar = run_calibrate(*map(str, stores), "--base", str(scenario), "--out", str(out))
    # what the fit covers: every family of parameter, from each kind of history shipped
    for key in ("incidents.sos.per_resident_year", "dispatch.ack_probability", "failures.driver_mtbf_years",
                "failures.repair_minutes", "gateways.uplink_mtbf_hours", "gateways.uplink_outage_minutes",
                "channels.sms.median_seconds", "dispatch.answer.village_doctor.probability"):  # fmt: skip
        assert key in sidecar["estimates"], key
    assert {"lamps.town_traffic", "lamps.village_traffic", "incidents.sos.hourly"} <= set(sidecar["hourly"])
    return out.read_text(), json.dumps(sidecar, sort_keys=True)


@pytest.mark.slow  # ~10 s: 2 x 60 gateway-days lived through the real Engine, ~100 messages shipped, two fits
def test_calibrate_from_the_centre_equals_calibrate_from_the_stores(
    field: tuple[Path, list[Path]], from_stores: tuple[str, str], database_url: str, tmp_path: Path
) -> None:
    scenario, originals = field
    stores = [tmp_path / p.name for p in originals]
    for original, copy in zip(originals, stores, strict=True):
        shutil.copy(original, copy)  # shipping moves the store's marks: each test its own copy
    with open_database(database_url) as db:
        shipped = [ship(path, path.stem, db) for path in stores]
    assert min(shipped) >= 3 and shipped[2] > 25  # several tables, several rounds for the ledger
    assert [h.path for h in read_centre(database_url, "naxi")] == ["centre:gw0", "centre:gw1", "centre:gw2"]
    out = tmp_path / "fit.toml"  # as deep as the stores' fit: the same relative path to the policy
    output, sidecar = run_calibrate(
        "--centre", database_url, "--district", "naxi", "--base", str(scenario), "--out", str(out)
    )
    assert "the centre of naxi, 3 gateway(s)" in output
    # every estimate, interval, count and per-hour rate identical; the same scenario file
    assert json.dumps(sidecar, sort_keys=True) == from_stores[1]
    assert out.read_text() == from_stores[0]


def test_calibrate_centre_errors_are_clear(tmp_path: Path) -> None:
    shutil.copytree(SCENARIOS / "policies", tmp_path / "policies")
    scenario = tmp_path / "known.toml"
    scenario.write_text(KNOWN)
    runner = CliRunner()
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    open_database(empty).close()
    out = ["--base", str(scenario), "--out", str(tmp_path / "x.toml")]
    r = runner.invoke(app, ["calibrate", "--centre", empty, "--district", "naxi", *out])
    assert r.exit_code == 2 and "no gateway of district 'naxi' has sent history yet" in r.output
    r = runner.invoke(app, ["calibrate", "--centre", f"sqlite:///{tmp_path / 'new.db'}", *out])
    assert r.exit_code == 2 and "not migrated?" in r.output
    r = runner.invoke(app, ["calibrate", str(tmp_path / "gw.sqlite3"), "--centre", empty, *out])
    assert r.exit_code == 2 and "either gateway stores or --centre" in r.output
    r = runner.invoke(app, ["calibrate", *out])
    assert r.exit_code == 2 and "either gateway stores or --centre" in r.output
