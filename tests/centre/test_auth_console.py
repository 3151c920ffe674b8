"""The console's accounts and sessions (centre/console/auth.py) on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib

import pytest

from centre.console import auth
from centre.db import open_database


def test_a_password_is_stored_as_an_argon2id_hash_and_checked() -> None:
    hashed = auth.hash_password("correct horse")
    assert hashed.startswith("$argon2id$") and "correct horse" not in hashed
    assert auth.check_password(hashed, "correct horse")
    assert not auth.check_password(hashed, "correct hors")
    assert not auth.check_password("not a hash", "correct horse")
    with pytest.raises(auth.AuthError, match="at least 8"):
        auth.hash_password("short")


def test_accounts_sessions_expiry_and_roles(database_url: str) -> None:
    with open_database(database_url) as db:
        assert auth.add_user(db, "ana", "operator-pass", "operator", now=100.0) is True
        assert auth.add_user(db, "vic", "viewer-pass", "viewer", now=100.0) is True
        with pytest.raises(auth.AuthError, match="role 'admin'"):
            auth.add_user(db, "eve", "whatever-pass", "admin")
        with pytest.raises(auth.AuthError, match="user name"):
            auth.add_user(db, "a b", "whatever-pass", "viewer")
        assert [(n, r) for n, r, _ in auth.list_users(db)] == [("ana", "operator"), ("vic", "viewer")]

        assert auth.authenticate(db, "ana", "operator-pass") == "operator"
        assert auth.authenticate(db, "vic", "viewer-pass") == "viewer"
        assert auth.authenticate(db, "ana", "viewer-pass") is None  # wrong password
        assert auth.authenticate(db, "nobody", "operator-pass") is None

        token = auth.open_session(db, "ana", hours=2.0, now=1000.0)
        stored = db.query("SELECT token_sha256, username, expires FROM sessions")
        assert stored == [(hashlib.sha256(token.encode()).hexdigest(), "ana", 1000.0 + 7200.0)]
        assert token not in repr(stored)  # only the hash is kept

        found = auth.session(db, token, now=1000.0 + 7199.0)
        assert found is not None and found.username == "ana" and found.role == "operator"
        assert auth.session(db, token, now=1000.0 + 7200.0) is None  # expired
        assert auth.session(db, token + "x", now=1000.0) is None
        assert auth.csrf_ok(found, found.csrf) and not auth.csrf_ok(found, "") and not auth.csrf_ok(found, "0" * 64)

        viewer = auth.session(db, auth.open_session(db, "vic", hours=1.0, now=1000.0), now=1001.0)
        assert viewer is not None and viewer.role == "viewer" and viewer.csrf != found.csrf

        # a new password ends the sessions; removing the account too
        auth.add_user(db, "ana", "another-pass", "operator")
        assert auth.session(db, token, now=1001.0) is None
        assert auth.authenticate(db, "ana", "operator-pass") is None
        assert auth.authenticate(db, "ana", "another-pass") == "operator"
        token = auth.open_session(db, "ana", hours=1.0, now=1000.0)
        assert auth.remove_user(db, "ana") is True and auth.remove_user(db, "ana") is False
        assert auth.session(db, token, now=1001.0) is None

        auth.close_session(db, token)  # logout of a session already gone: harmless


def test_failed_logins_lock_a_name_for_a_while() -> None:
    throttle = auth.LoginThrottle()
    for i in range(auth.MAX_FAILURES - 1):
        throttle.failed("ana", 100.0 + i)
    assert throttle.allowed("ana", 110.0)
    throttle.failed("ana", 110.0)
    assert not throttle.allowed("ana", 111.0)
    assert throttle.allowed("bob", 111.0)  # per name
    assert throttle.allowed("ana", 110.0 + auth.LOCKOUT_S)
    # failures spread beyond the window do not add up
    spacing = auth.FAILURE_WINDOW_S / (auth.MAX_FAILURES - 1)
    for i in range(auth.MAX_FAILURES * 2):
        throttle.failed("bob", 1000.0 + i * spacing)
        assert throttle.allowed("bob", 1000.0 + i * spacing)
    throttle.succeeded("carl")
    for _ in range(auth.MAX_FAILURES):
        throttle.failed("carl", 5000.0)
    assert not throttle.allowed("carl", 5000.0)
