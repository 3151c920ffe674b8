"""The gateway's policy acceptance state in SQLite: the active bundle per kind and the clock floor.

Owns: the acceptance gate of a signed policy bundle (size, signature by a pinned key, target,
version strictly increasing, validity window judged against max(wall clock, last known time)),
the durable record of what was accepted, and the persisted last known time that keeps a clock set
back from reviving an expired bundle.
Must not import: asyncio, edge_agent.engine, edge_agent.transports, edge_agent.agent.

Durability and crash safety
---------------------------
The database runs in WAL mode and this module's connection uses ``synchronous=FULL``: a commit
is fsynced before :meth:`PolicyStore.accept` returns, so an acknowledgement sent after it cannot
outlive the stored version. Everything a bundle changes (the active row, the clock floor, the
history row) is written in one ``BEGIN IMMEDIATE`` transaction: a process killed at any moment
leaves either the old policy or the new one, whole. ``BEGIN IMMEDIATE`` also serialises two
processes accepting at once, so the version comparison and the write cannot interleave.

The version line is per bundle ``kind`` ("policy", "lighting-policy", "dispatch-policy"): each
kind has its own active bundle and its own monotonically increasing version.

The clock floor (``last known time``) advances to the wall clock and to the accepted bundle's
``issued_at`` whenever a bundle is accepted, and whenever the agent calls
:meth:`PolicyStore.observe_clock`. Rejected input never writes (a flood of garbage costs no disk
I/O), so it cannot move the floor either.
"""

from __future__ import annotations

import hashlib
import math
import sqlite3
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from edge_agent.errors import PolicyError
from edge_agent.policy.bundle import (
    DEFAULT_MAX_ENVELOPE_BYTES,
    Bundle,
    BundleKind,
    Reason,
    bundle_bytes,
    parse_envelope,
)
from edge_agent.policy.bundle_verify import check_payload, check_signatures, check_target, check_validity

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


__all__ = ["AcceptResult", "ActivePolicy", "FaultHook", "PolicyStore"]

# Called with a point name ("verified": all checks passed, nothing written yet; "written": rows
# written, not committed; "committed"). Only fault-injection tests pass one.
FaultHook = Callable[[str], None]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS policy_active (
    kind           TEXT PRIMARY KEY,
    version        INTEGER NOT NULL,
    envelope       BLOB NOT NULL,
    bundle         BLOB NOT NULL,
    payload        BLOB NOT NULL,
    bundle_sha256  TEXT NOT NULL,
    payload_sha256 TEXT NOT NULL,
    forced         INTEGER NOT NULL,
    key_id         TEXT NOT NULL,
    expires        INTEGER NOT NULL,
    accepted_at    INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS policy_clock (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    last_known INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS policy_history (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    kind          TEXT NOT NULL,
    version       INTEGER NOT NULL,
    bundle_sha256 TEXT NOT NULL,
    forced        INTEGER NOT NULL,
    key_id        TEXT NOT NULL,
    accepted_at   INTEGER NOT NULL
) STRICT;
"""


@dataclass(frozen=True)
class ActivePolicy:
    """The bundle a gateway runs for one kind, exactly as it was accepted."""

    kind: str
    version: int
    envelope: bytes  # as received (signatures included), for re-publishing to lamps or peers
    bundle: bytes  # canonical bundle bytes (the signed content)
    payload: bytes  # the policy file, byte for byte
    bundle_sha256: str
    payload_sha256: str
    forced: bool
    key_id: str
    expires: int
    accepted_at: int  # the effective time (max of wall clock and last known time)

    def decode(self) -> Bundle:
        """The bundle's fields (``kind``, ``target``, ``issued_at``, ...)."""
        bundle, _ = parse_envelope(self.envelope, max_size=len(self.envelope))
        return bundle


@dataclass(frozen=True)
class AcceptResult:
    """What :meth:`PolicyStore.accept` did: ``accepted`` a new version, or ``already_active``."""

    status: Literal["accepted", "already_active"]
    bundle: Bundle
    previous_version: int | None
    effective_now: int

    @property
    def changed(self) -> bool:
        """True when the active policy changed (the agent should apply and push it)."""
        return self.status == "accepted"


def _whole_seconds(now: float, what: str) -> int:
    if not math.isfinite(now):
        raise PolicyError("bad_clock", f"{what} is {now!r}; pass epoch seconds")
    return math.floor(now)


class PolicyStore:
    """The policy acceptance state of one gateway, in the SQLite file ``db_path``.

    Thread-safe (one connection behind a lock); safe against other processes using the same file.
    Use as a context manager or call :meth:`close`.
    """

    def __init__(self, db_path: str | Path, *, fault_hook: FaultHook | None = None) -> None:
        self.db_path = Path(db_path)
        self._fault_hook = fault_hook
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(self.db_path, isolation_level=None, check_same_thread=False, timeout=10.0)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise PolicyError(
                "store_unavailable",
                f"{self.db_path}: cannot open the policy store ({exc}); check the path, its permissions and free space",
            ) from None

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> PolicyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ reads

    def active(self, kind: BundleKind = "policy") -> ActivePolicy | None:
        """The accepted bundle of ``kind`` or None; ``store_corrupt`` if its hashes do not match."""
        with self._lock:
            row = self._query(
                "SELECT kind, version, envelope, bundle, payload, bundle_sha256, payload_sha256,"
                " forced, key_id, expires, accepted_at FROM policy_active WHERE kind = ?",
                (kind,),
            ).fetchone()
        if row is None:
            return None
        active = ActivePolicy(
            kind=row[0],
            version=row[1],
            envelope=row[2],
            bundle=row[3],
            payload=row[4],
            bundle_sha256=row[5],
            payload_sha256=row[6],
            forced=bool(row[7]),
            key_id=row[8],
            expires=row[9],
            accepted_at=row[10],
        )
        if (
            hashlib.sha256(active.payload).hexdigest() != active.payload_sha256
            or hashlib.sha256(active.bundle).hexdigest() != active.bundle_sha256
        ):
            raise PolicyError(
                Reason.STORE_CORRUPT,
                f"{self.db_path}: the stored {kind} v{active.version} does not match its hash; "
                "restore the file or re-deliver the bundle",
            )
        return active

    def last_known_time(self) -> int | None:
        """The persisted clock floor (epoch seconds), or None before anything was recorded."""
        with self._lock:
            row = self._query("SELECT last_known FROM policy_clock WHERE id = 1").fetchone()
        return None if row is None else int(row[0])

    def history(self) -> list[tuple[str, int, str, bool, int]]:
        """Accepted bundles, oldest first: (kind, version, bundle_sha256, forced, accepted_at)."""
        with self._lock:
            rows = self._query(
                "SELECT kind, version, bundle_sha256, forced, accepted_at FROM policy_history ORDER BY seq"
            ).fetchall()
        return [(r[0], r[1], r[2], bool(r[3]), r[4]) for r in rows]

    # ------------------------------------------------------------------ writes

    def observe_clock(self, wall_clock_now: float) -> int:
        """Persist ``max(last known time, wall_clock_now)`` and return it.

        The agent calls this now and then (e.g. hourly) so that the floor keeps up with time even
        when no bundle arrives.
        """
        now = _whole_seconds(wall_clock_now, "wall_clock_now")
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    floor = self._read_floor()
                    effective = max(now, floor or 0)
                    self._write_floor(effective)
                    self._conn.execute("COMMIT")
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise self._store_error(exc) from None
        return effective

    def accept(
        self,
        envelope_bytes: bytes,
        *,
        trusted_keys: Mapping[str, Ed25519PublicKey],
        gateway_id: str,
        district: str,
        wall_clock_now: float,
        max_size: int = DEFAULT_MAX_ENVELOPE_BYTES,
        threshold: int = 1,
    ) -> AcceptResult:
        """Verify an envelope and make it the active policy of its kind, durably, or refuse it.

        Raises :class:`PolicyError` (reasons: ``oversized``, ``truncated``, ``malformed``,
        ``non_canonical``, ``unknown_key``, ``bad_signature``, ``signature_threshold``,
        ``payload_mismatch``, ``wrong_target``, ``rollback``, ``version_conflict``,
        ``not_yet_valid``, ``expired``, ``store_unavailable``); the active policy is then
        unchanged. When this returns ``accepted``, the new version is on disk (fsynced).
        Re-delivery of the active bundle (same bytes) returns ``already_active`` and writes nothing.
        """
        wall = _whole_seconds(wall_clock_now, "wall_clock_now")
        # Stateless checks first, without the write lock: garbage never touches the database.
        bundle, signatures = parse_envelope(envelope_bytes, max_size)
        check_signatures(bundle, signatures, trusted_keys, threshold=threshold)
        check_payload(bundle)
        check_target(bundle, gateway_id, district)
        raw = bundle_bytes(bundle)
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    result = self._accept_locked(bundle, raw, envelope_bytes, wall)
                    self._conn.execute("COMMIT")
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise self._store_error(exc) from None
        self._fault("committed")
        return result

    # ------------------------------------------------------------------ internals

    def _accept_locked(self, bundle: Bundle, raw: bytes, envelope: bytes, wall: int) -> AcceptResult:
        row = self._conn.execute("SELECT version, bundle FROM policy_active WHERE kind = ?", (bundle.kind,)).fetchone()
        floor = self._read_floor()
        now = max(wall, floor or 0)
        previous: int | None = None if row is None else int(row[0])
        if row is not None:
            stored_version, stored_bundle = int(row[0]), bytes(row[1])
            if bundle.version < stored_version:
                raise PolicyError(
                    Reason.ROLLBACK,
                    f"{bundle.kind} v{bundle.version} is older than the active "
                    f"v{stored_version}; sign a version above {stored_version}",
                )
            if bundle.version == stored_version:
                if raw == stored_bundle:
                    return AcceptResult("already_active", bundle, previous, now)
                raise PolicyError(
                    Reason.VERSION_CONFLICT,
                    f"{bundle.kind} v{bundle.version} is already active with different content; "
                    f"sign the change as v{stored_version + 1}",
                )
        check_validity(bundle, now)
        self._fault("verified")
        self._conn.execute(
            "INSERT INTO policy_active (kind, version, envelope, bundle, payload, bundle_sha256,"
            " payload_sha256, forced, key_id, expires, accepted_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (kind) DO UPDATE SET version = excluded.version,"
            " envelope = excluded.envelope, bundle = excluded.bundle, payload = excluded.payload,"
            " bundle_sha256 = excluded.bundle_sha256, payload_sha256 = excluded.payload_sha256,"
            " forced = excluded.forced, key_id = excluded.key_id, expires = excluded.expires,"
            " accepted_at = excluded.accepted_at",
            (
                bundle.kind,
                bundle.version,
                bytes(envelope),
                raw,
                bundle.payload,
                hashlib.sha256(raw).hexdigest(),
                bundle.payload_sha256,
                int(bundle.forced),
                bundle.key_id,
                bundle.expires,
                now,
            ),
        )
        self._conn.execute(
            "INSERT INTO policy_history (kind, version, bundle_sha256, forced, key_id,"
            " accepted_at) VALUES (?, ?, ?, ?, ?, ?)",
            (
                bundle.kind,
                bundle.version,
                hashlib.sha256(raw).hexdigest(),
                int(bundle.forced),
                bundle.key_id,
                now,
            ),
        )
        self._write_floor(max(now, bundle.issued_at))
        self._fault("written")
        return AcceptResult("accepted", bundle, previous, now)

    def _read_floor(self) -> int | None:
        row = self._conn.execute("SELECT last_known FROM policy_clock WHERE id = 1").fetchone()
        return None if row is None else int(row[0])

    def _write_floor(self, value: int) -> None:
        self._conn.execute(
            "INSERT INTO policy_clock (id, last_known) VALUES (1, ?)"
            " ON CONFLICT (id) DO UPDATE SET last_known = max(last_known, excluded.last_known)",
            (value,),
        )

    def _query(self, sql: str, params: tuple[object, ...] = ()) -> sqlite3.Cursor:
        try:
            return self._conn.execute(sql, params)
        except sqlite3.Error as exc:
            raise self._store_error(exc) from None

    def _store_error(self, exc: sqlite3.Error) -> PolicyError:
        return PolicyError(
            "store_unavailable",
            f"{self.db_path}: {exc}; the active policy is unchanged (check disk space and permissions)",
        )

    def _fault(self, point: str) -> None:
        if self._fault_hook is not None:
            self._fault_hook(point)
