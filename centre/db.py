"""The centre's database: one small API over PostgreSQL (psycopg 3) and SQLite (the stdlib).

Owns: opening a database from its URL (``postgresql://...`` or ``sqlite:///path``), the
transaction (``Database.transaction()`` gives a ``Tx``; it commits on a clean exit and rolls back
on an exception), the placeholder dialect (every statement is written with ``?`` and is turned
into psycopg's ``%s`` here), and the versioned migrations in ``centre/migrations/NNN_name.sql``
(applied in order, each in its own transaction, recorded in ``schema_migrations``; two centres
starting at once apply each migration once).

SQL written against this module uses the subset both databases share: ``INSERT ... ON CONFLICT
... DO UPDATE SET x = excluded.x`` / ``DO NOTHING``, TEXT, INTEGER, BIGINT, DOUBLE PRECISION.
SQLite runs in WAL mode with ``synchronous=FULL``: a commit that returned is on disk.
One connection per ``Database``, used by one thread at a time (a lock); the service runs its
writes in a worker thread so the event loop never waits on the disk.
Must not import: anything of ours but errors.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Protocol

from edge_agent.errors import ConfigError, Problem

Dialect = Literal["sqlite", "postgresql"]
Params = Sequence[Any]

_MIGRATION_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


class Tx(Protocol):
    """One open transaction."""

    def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; the number of rows it changed."""
        ...

    def executemany(self, sql: str, rows: Iterable[Params]) -> None: ...

    def query(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]: ...


class _Cursor:
    def __init__(self, cursor: Any, convert: Any) -> None:
        self._cursor = cursor
        self._convert = convert

    def execute(self, sql: str, params: Params = ()) -> int:
        self._cursor.execute(self._convert(sql), tuple(params))
        return int(self._cursor.rowcount)

    def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        self._cursor.executemany(self._convert(sql), [tuple(row) for row in rows])

    def query(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        self._cursor.execute(self._convert(sql), tuple(params))
        return list(self._cursor.fetchall())


def _same(sql: str) -> str:
    return sql


_converted: dict[str, str] = {}


def _to_psycopg(sql: str) -> str:
    """``?`` placeholders -> ``%s`` (a literal ``%`` doubled); statements never hold a ``?`` in a string."""
    found = _converted.get(sql)
    if found is None:
        found = _converted[sql] = sql.replace("%", "%%").replace("?", "%s")
    return found


class Database:
    """An open database. ``transaction()`` for writes and consistent reads, ``query`` for one read."""

    def __init__(self, url: str, dialect: Dialect, connection: Any) -> None:
        self.url = url
        self.dialect = dialect
        self._conn = connection
        self._lock = threading.RLock()
        self._convert = _to_psycopg if dialect == "postgresql" else _same

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self._lock:
            if self.dialect == "sqlite":
                cursor = self._conn.cursor()
                cursor.execute("BEGIN IMMEDIATE")
                try:
                    yield _Cursor(cursor, self._convert)
                except BaseException:
                    cursor.execute("ROLLBACK")
                    raise
                cursor.execute("COMMIT")
            else:
                with self._conn.transaction(), self._conn.cursor() as cursor:
                    yield _Cursor(cursor, self._convert)

    def query(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        with self.transaction() as tx:
            return tx.query(sql, params)

    def execute(self, sql: str, params: Params = ()) -> int:
        with self.transaction() as tx:
            return tx.execute(sql, params)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///path`` URL (``sqlite:////abs`` or ``sqlite:///rel``); None for another scheme."""
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///") :])
    return None


def open_database(url: str, *, migrate: bool = True) -> Database:
    """Connect and (by default) bring the schema up to date. ConfigError naming the URL's problem."""
    path = sqlite_path(url)
    if path is not None:
        if str(path) != ":memory:":
            path.parent.mkdir(parents=True, exist_ok=True)
        conn: Any = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30.0)
        _wal(conn)
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        db = Database(url, "sqlite", conn)
    elif url.startswith(("postgresql://", "postgres://")):
        import psycopg

        try:
            conn = psycopg.connect(url, autocommit=True)
        except psycopg.OperationalError as exc:
            raise ConfigError([Problem(url, "database.url", f"cannot connect to PostgreSQL: {exc}".strip())]) from exc
        db = Database(url, "postgresql", conn)
    else:
        raise ConfigError(
            [Problem(url, "database.url", "expected postgresql://user@host:port/db or sqlite:///path/to/centre.db")]
        )
    if migrate:
        apply_migrations(db)
    return db


def _wal(conn: sqlite3.Connection) -> None:
    """WAL mode; switching takes an exclusive lock that SQLite does not wait for (no busy
    handler), so a second centre opening the same new file at that moment tries again."""
    for attempt in range(100):
        try:
            conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == 99:
                raise
            time.sleep(0.05)
        else:
            return


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, SQL) of every migration shipped, in order."""
    found = []
    for entry in resources.files("centre.migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    found.sort()
    return found


def statements(script: str) -> list[str]:
    """A migration's statements: comments dropped, split at each ``;`` that ends a line."""
    lines = [line.split("--", 1)[0].rstrip() for line in script.splitlines()]
    text = "\n".join(line for line in lines if line.strip())
    return [part.strip() for part in re.split(r";\s*$", text, flags=re.MULTILINE) if part.strip()]


def schema_version(db: Database) -> int:
    with db.transaction() as tx:
        _ensure_ledger(tx)
        rows = tx.query("SELECT MAX(version) FROM schema_migrations")
    return int(rows[0][0] or 0)


def _ensure_ledger(tx: Tx) -> None:
    tx.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied DOUBLE PRECISION NOT NULL)"
    )


def apply_migrations(db: Database) -> list[int]:
    """Apply every migration not applied yet; the versions applied now."""
    applied_now = []
    for version, name, script in migrations():
        with db.transaction() as tx:
            if db.dialect == "postgresql":
                tx.execute("SELECT pg_advisory_xact_lock(7411)")  # two centres starting at once
            _ensure_ledger(tx)
            if tx.query("SELECT 1 FROM schema_migrations WHERE version = ?", (version,)):
                continue
            for statement in statements(script):
                tx.execute(statement)
            tx.execute(
                "INSERT INTO schema_migrations (version, name, applied) VALUES (?, ?, ?)", (version, name, time.time())
            )
            applied_now.append(version)
    return applied_now
