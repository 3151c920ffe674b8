"""The console's accounts and sessions.

Owns: operators' password hashes (argon2id, argon2-cffi's ``PasswordHasher``), the ``users``
table (add, list, remove), the ``sessions`` table (a random cookie token; only its sha256 is
stored; expiry ``[console] session_hours``), the per-session CSRF token (derived from the cookie
token with HMAC, so nothing more is stored), the roles (``viewer`` reads, ``operator`` may also
acknowledge) and the failed-login throttle (per user name, in memory).
Blocking: every function here that takes a ``Database`` does I/O; the server calls them in a
worker thread.
Must not import: the console's server or pages, the service.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field
from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from centre.db import Database

Role = Literal["viewer", "operator"]
ROLES: tuple[Role, ...] = ("viewer", "operator")
MAX_FAILURES = 5  # wrong passwords for one name within FAILURE_WINDOW_S before it is locked
FAILURE_WINDOW_S = 900.0
LOCKOUT_S = 300.0
MIN_PASSWORD = 8

_hasher = PasswordHasher()
# verified when a name is unknown, so that a wrong name takes as long as a wrong password
_DUMMY_HASH = _hasher.hash("not a password of anyone")


class AuthError(ValueError):
    """A user name, role or password that cannot be used; the message says which."""


@dataclass(frozen=True)
class Session:
    username: str
    role: Role
    expires: float
    csrf: str  # the token the session's forms carry


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise AuthError(f"a password of at least {MIN_PASSWORD} characters")
    return _hasher.hash(password)


def check_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def _check_name(username: str) -> str:
    name = username.strip()
    if not name or len(name) > 64 or not all(c.isalnum() or c in "._-@" for c in name):
        raise AuthError(f"user name {username!r}: 1-64 letters, digits or . _ - @")
    return name


def _check_role(role: str) -> Role:
    if role not in ROLES:
        raise AuthError(f"role {role!r}: expected one of {', '.join(ROLES)}")
    return role


def add_user(db: Database, username: str, password: str, role: str, *, now: float | None = None) -> bool:
    """Create the account, or replace the password and role of an existing one. True: it is new."""
    name, checked = _check_name(username), _check_role(role)
    hashed = hash_password(password)
    with db.transaction() as tx:
        existed = bool(tx.query("SELECT 1 FROM users WHERE username = ?", (name,)))
        tx.execute(
            "INSERT INTO users (username, password_hash, role, created) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (username) DO UPDATE SET password_hash = excluded.password_hash, role = excluded.role",
            (name, hashed, checked, time.time() if now is None else now),
        )
        if existed:  # a new password ends the sessions opened with the old one
            tx.execute("DELETE FROM sessions WHERE username = ?", (name,))
    return not existed


def list_users(db: Database) -> list[tuple[str, str, float]]:
    """(name, role, created) of every account, by name."""
    rows = db.query("SELECT username, role, created FROM users ORDER BY username")
    return [(str(r[0]), str(r[1]), float(r[2])) for r in rows]


def remove_user(db: Database, username: str) -> bool:
    """Delete the account and its sessions. False: there was none."""
    with db.transaction() as tx:
        tx.execute("DELETE FROM sessions WHERE username = ?", (username,))
        return tx.execute("DELETE FROM users WHERE username = ?", (username,)) > 0


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def csrf_token(token: str) -> str:
    """The CSRF token of the session whose cookie token is ``token``."""
    return hmac.new(token.encode(), b"console csrf", hashlib.sha256).hexdigest()


def authenticate(db: Database, username: str, password: str) -> Role | None:
    """The account's role when the password is right, else None (also for an unknown name)."""
    rows = db.query("SELECT password_hash, role FROM users WHERE username = ?", (username,))
    if not rows:
        check_password(_DUMMY_HASH, password)
        return None
    stored, role = str(rows[0][0]), str(rows[0][1])
    if not check_password(stored, password) or role not in ROLES:
        return None
    return role


def open_session(db: Database, username: str, hours: float, *, now: float | None = None) -> str:
    """A new session for ``username``: the cookie's token (only its hash is stored)."""
    now = time.time() if now is None else now
    token = secrets.token_urlsafe(32)
    with db.transaction() as tx:
        tx.execute("DELETE FROM sessions WHERE expires <= ?", (now,))  # tidy as we go
        tx.execute(
            "INSERT INTO sessions (token_sha256, username, expires) VALUES (?, ?, ?)",
            (_digest(token), username, now + hours * 3600.0),
        )
    return token


def session(db: Database, token: str, *, now: float | None = None) -> Session | None:
    """The live session the cookie ``token`` opens (its user still there), or None."""
    if not token or len(token) > 128:
        return None
    now = time.time() if now is None else now
    rows = db.query(
        "SELECT s.username, u.role, s.expires FROM sessions s JOIN users u ON u.username = s.username "
        "WHERE s.token_sha256 = ? AND s.expires > ?",
        (_digest(token), now),
    )
    if not rows or rows[0][1] not in ROLES:
        return None
    return Session(str(rows[0][0]), rows[0][1], float(rows[0][2]), csrf_token(token))


def close_session(db: Database, token: str) -> None:
    db.execute("DELETE FROM sessions WHERE token_sha256 = ?", (_digest(token),))


def csrf_ok(current: Session, offered: str) -> bool:
    return bool(offered) and hmac.compare_digest(current.csrf.encode(), offered.encode())


@dataclass
class LoginThrottle:
    """Failed logins per user name: after ``MAX_FAILURES`` within the window, the name is refused
    (whatever the password) for ``LOCKOUT_S``. In memory: a restart forgets it."""

    failures: dict[str, list[float]] = field(default_factory=dict)
    locked_until: dict[str, float] = field(default_factory=dict)

    def allowed(self, username: str, now: float) -> bool:
        return self.locked_until.get(username, 0.0) <= now

    def failed(self, username: str, now: float) -> None:
        recent = [t for t in self.failures.get(username, []) if now - t < FAILURE_WINDOW_S]
        recent.append(now)
        self.failures[username] = recent
        if len(recent) >= MAX_FAILURES:
            self.locked_until[username] = now + LOCKOUT_S
            self.failures[username] = []
        if len(self.failures) > 10_000:  # names tried by a script: keep memory bounded
            self.failures.clear()

    def succeeded(self, username: str) -> None:
        self.failures.pop(username, None)
