"""The console over real HTTP: a ConsoleServer on a free port, a real SQLite database, plain clients."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from centre.console import auth
from centre.console.server import COOKIE
from centre.db import Database, open_database
from tests.centre.console_helpers import Published, add_accounts, arequest, console, insert_alert, login

GW = "naxi-v01"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    with open_database(f"sqlite:///{tmp_path / 'centre.db'}") as database:
        add_accounts(database)
        database.execute(
            "INSERT INTO gateways (gateway, online, last_seen, policy_version, lamps, lamps_on_version, outbox_depth, "
            "outages) VALUES (?, 1, ?, 4, 12, 11, 3, 2)",
            (GW, time.time() - 30),
        )
        yield database


def csrf_of(page: bytes) -> str:
    found = re.search(rb'name="csrf" value="([0-9a-f]{64})"', page)
    assert found is not None, "no CSRF token in the page"
    return found.group(1).decode()


async def test_signing_in_shows_the_gateways_and_signing_out_ends_the_session(db: Database) -> None:
    async with console(db, Published()) as server:
        port = server.port
        assert (await arequest(port, "GET", "/healthz"))[:3:2] == (200, b"ok\n")
        status, headers, _ = await arequest(port, "GET", "/")
        assert status == 303 and headers["location"] == "/login"
        assert (await arequest(port, "GET", "/snapshot.json"))[0] == 401
        assert (await arequest(port, "GET", "/events"))[0] == 401

        status, _, body = await arequest(port, "POST", "/login", form={"username": "ana", "password": "nope-nope"})
        assert status == 401 and b"Wrong user name or password" in body and "set-cookie" not in _
        status, headers, _ = await arequest(
            port, "POST", "/login", form={"username": "ana", "password": "operator-pass"}
        )
        assert status == 303 and headers["location"] == "/"
        cookie = headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert "Max-Age=3600" in cookie
        session = cookie.split(";", 1)[0]
        token = session.split("=", 1)[1]
        assert db.query("SELECT COUNT(*) FROM sessions WHERE token_sha256 = ?", (token,)) == [(0,)]  # only its hash

        status, headers, page = await arequest(port, "GET", "/", cookie=session)
        assert status == 200
        csp = headers["content-security-policy"]
        assert "script-src 'self'" in csp and "style-src 'self'" in csp and "unsafe-inline" not in csp
        assert b"<script>" not in page and b" style=" not in page  # nothing inline: the CSP holds
        row = re.search(rb'<tr data-gateway="naxi-v01">(.*?)</tr>', page)
        assert row is not None
        cells = re.findall(rb"<td[^>]*>(.*?)</td>", row.group(1))
        assert cells[1] == b'<span class="up">online</span>' and cells[3] == b"4" and cells[4] == b"11/12"
        assert cells[5] == b"3" and cells[6] == b"2"
        snap = json.loads((await arequest(port, "GET", "/snapshot.json", cookie=session))[2])
        assert snap["gateways"][0]["lamps_on_version"] == 11

        status, _, _ = await arequest(port, "POST", "/logout", form={}, cookie=session)
        assert status == 403  # no CSRF token
        status, headers, _ = await arequest(port, "POST", "/logout", form={"csrf": csrf_of(page)}, cookie=session)
        assert status == 303 and headers["location"] == "/login" and "Max-Age=0" in headers["set-cookie"]
        assert (await arequest(port, "GET", "/", cookie=session))[0] == 303
        assert db.query("SELECT COUNT(*) FROM sessions") == [(0,)]


async def test_acknowledge_needs_an_operator_and_the_csrf_token(db: Database) -> None:
    now = time.time()
    ledger = [(0, "doc1", "sms", "delivered"), (0, "doc1", "push", "failed")]
    insert_alert(db, "a-1", GW, raised=now - 90, body={"responder": "doc1"}, reached=ledger)
    insert_alert(db, "a-2", GW, status="acknowledged", raised=now - 60, body={"responder": "doc2"})
    published = Published()
    async with console(db, published) as server:
        port = server.port
        viewer = await login(port, "vic")
        page = (await arequest(port, "GET", "/", cookie=viewer))[2]
        assert b'data-alert="a-1"' in page and b'action="/ack"' not in page  # a viewer has no button
        status, _, _ = await arequest(
            port, "POST", "/ack", form={"alert_id": "a-1", "csrf": csrf_of(page)}, cookie=viewer
        )
        assert status == 403

        operator = await login(port, "ana")
        page = (await arequest(port, "GET", "/", cookie=operator))[2]
        row = re.search(rb'<tr class="alert p1" data-alert="a-1">(.*?)</tr>', page)
        assert row is not None and b"doc1" in row.group(1) and b"sms delivered, push failed" in row.group(1)
        assert b"2 min" in row.group(1)  # its age
        assert page.count(b'action="/ack"') == 1  # a-2 is acknowledged already: no button
        csrf = csrf_of(page)
        assert (await arequest(port, "POST", "/ack", form={"alert_id": "a-1"}, cookie=operator))[0] == 403
        assert (await arequest(port, "POST", "/ack", form={"alert_id": "a-1", "csrf": "0" * 64}, cookie=operator))[
            0
        ] == 403
        cross = {"origin": "http://evil.example"}
        assert (
            await arequest(port, "POST", "/ack", form={"alert_id": "a-1", "csrf": csrf}, cookie=operator, headers=cross)
        )[0] == 403
        assert (await arequest(port, "POST", "/ack", form={"alert_id": "a-1", "csrf": csrf}))[0] == 401
        assert published.calls == []

        status, _, _ = await arequest(port, "POST", "/ack", form={"alert_id": "a-2", "csrf": csrf}, cookie=operator)
        assert status == 409
        status, _, _ = await arequest(port, "POST", "/ack", form={"alert_id": "zz", "csrf": csrf}, cookie=operator)
        assert status == 404
        status, headers, _ = await arequest(
            port, "POST", "/ack", form={"alert_id": "a-1", "csrf": csrf}, cookie=operator
        )
        assert status == 303 and headers["location"] == "/?sent=a-1"
        assert [(t, json.loads(p)) for t, p in published.calls] == [
            (f"district/v1/{GW}/command/ack", {"v": 1, "alert_id": "a-1", "by": "operator:ana"})
        ]


async def test_a_broker_that_does_not_confirm_is_a_503(db: Database) -> None:
    insert_alert(db, "a-1", GW, raised=time.time(), body={"responder": "doc1"})

    async def failing(topic: str, payload: bytes, *, retain: bool = False) -> None:
        raise ConnectionError("not connected")

    async with console(db, failing) as server:
        operator = await login(server.port, "ana")
        page = (await arequest(server.port, "GET", "/", cookie=operator))[2]
        form = {"alert_id": "a-1", "csrf": csrf_of(page)}
        status, _, body = await arequest(server.port, "POST", "/ack", form=form, cookie=operator)
        assert status == 503 and b"not sent" in body


async def test_failed_logins_are_throttled_per_name(db: Database) -> None:
    async with console(db, Published()) as server:
        for _ in range(auth.MAX_FAILURES):
            form = {"username": "ana", "password": "wrong-password"}
            assert (await arequest(server.port, "POST", "/login", form=form))[0] == 401
        right = {"username": "ana", "password": "operator-pass"}
        status, headers, _ = await arequest(server.port, "POST", "/login", form=right)
        assert status == 429 and "set-cookie" not in headers
        assert (await arequest(server.port, "POST", "/login", form={"username": "vic", "password": "viewer-pass"}))[
            0
        ] == 303  # another name is not locked


async def test_the_live_stream_sends_a_new_alert_without_reload(db: Database) -> None:
    async with console(db, Published()) as server:
        session = await login(server.port, "vic")
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(f"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {session}\r\n\r\n".encode())
        await writer.drain()

        async def frame() -> str:
            async with asyncio.timeout(10):
                raw = await reader.readuntil(b"\n\n")
            text = raw.decode()
            return text if "event: state" in text else await frame()

        first = await frame()
        assert "naxi-v01" in first and "No open alert." in first
        insert_alert(
            db, "live-1", GW, raised=time.time(), body={"responder": "doc1"}, reached=[(0, "doc1", "push", "queued")]
        )
        second = await frame()
        assert 'data-alert="live-1"' in second
        writer.close()


async def test_an_unknown_route_and_bad_forms(db: Database) -> None:
    async with console(db, Published()) as server:
        session = await login(server.port, "ana")
        assert (await arequest(server.port, "GET", "/nope", cookie=session))[0] == 404
        status, _, body = await arequest(server.port, "POST", "/login", headers={"content-type": "text/plain"})
        assert status == 400 and b"expected a form" in body
        assert (await arequest(server.port, "DELETE", "/", cookie=session))[0] == 405
        huge = {"username": "ana", "password": "x" * 5000}
        assert (await arequest(server.port, "POST", "/login", form=huge))[0] == 413
        status, headers, body = await arequest(server.port, "GET", "/static/console.js")
        assert status == 200 and b"EventSource" in body and headers["content-type"].startswith("text/javascript")


async def test_a_stream_ends_when_its_session_does(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    from centre.console import server as console_server

    monkeypatch.setattr(console_server, "SESSION_CHECK_S", 0.1)
    async with console(db, Published()) as server:
        session = await login(server.port, "vic")
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(f"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {session}\r\n\r\n".encode())
        await writer.drain()
        async with asyncio.timeout(10):
            assert b"event: state" in await reader.readuntil(b"event: state")
            auth.remove_user(db, "vic")  # an administrator removes the account
            assert b"event: expired" in await reader.readuntil(b"event: expired")
        writer.close()
