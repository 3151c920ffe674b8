"""The centre's database API on both databases: migrations once, transactions, portable upserts."""

from __future__ import annotations

import threading

import pytest

from centre.db import migrations, open_database, schema_version, statements
from edge_agent.errors import ConfigError


def test_migrations_apply_once_and_leave_the_shipped_tables(database_url: str) -> None:
    with open_database(database_url) as db:
        assert schema_version(db) == migrations()[-1][0]
    with open_database(database_url) as again:  # a restart applies nothing twice
        assert schema_version(again) == migrations()[-1][0]
        rows = again.query("SELECT version FROM schema_migrations ORDER BY version")
        assert [r[0] for r in rows] == [m[0] for m in migrations()]
        for table in ("gateways", "alerts", "alert_changes", "lamp_hours", "rollout_targets", "users", "sessions"):
            assert again.query(f"SELECT COUNT(*) FROM {table}") == [(0,)]


def test_two_centres_starting_at_once_migrate_once(database_url: str) -> None:
    errors: list[BaseException] = []

    def start() -> None:
        try:
            open_database(database_url).close()
        except BaseException as exc:  # the test reports it
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with open_database(database_url) as db:
        assert db.query("SELECT COUNT(*) FROM schema_migrations") == [(len(migrations()),)]


def test_a_transaction_commits_whole_or_not_at_all(database_url: str) -> None:
    with open_database(database_url) as db:

        def cut_short() -> None:
            with db.transaction() as tx:
                tx.execute("INSERT INTO gateways (gateway, outages) VALUES (?, ?)", ("gw-a", 1))
                raise RuntimeError("cut short")

        with pytest.raises(RuntimeError):
            cut_short()
        assert db.query("SELECT COUNT(*) FROM gateways") == [(0,)]
        with db.transaction() as tx:
            assert tx.execute("INSERT INTO gateways (gateway) VALUES (?) ON CONFLICT (gateway) DO NOTHING", ("g",)) == 1
            assert tx.execute("INSERT INTO gateways (gateway) VALUES (?) ON CONFLICT (gateway) DO NOTHING", ("g",)) == 0
            tx.execute(
                "INSERT INTO gateways (gateway, outages) VALUES (?, 1) "
                "ON CONFLICT (gateway) DO UPDATE SET outages = gateways.outages + excluded.outages",
                ("g",),
            )
            # a literal percent sign survives psycopg's placeholder style
            assert tx.query("SELECT outages, ? FROM gateways WHERE gateway LIKE 'g%'", ("100%",)) == [(1, "100%")]


def test_statements_split_at_line_ends_and_drop_comments() -> None:
    script = "-- head; not a statement\nCREATE TABLE a (x TEXT); -- trailing\nCREATE TABLE b (y TEXT)\n;\n"
    assert statements(script) == ["CREATE TABLE a (x TEXT)", "CREATE TABLE b (y TEXT)"]


def test_an_unknown_url_names_the_key_and_the_forms() -> None:
    with pytest.raises(ConfigError) as info:
        open_database("mysql://localhost/centre")
    assert "database.url" in str(info.value)
    assert "sqlite:///" in str(info.value)
