"""Helpers for the console's tests: a seeded database, a console on a free port, plain HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import zlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from centre.console import auth
from centre.console.server import ConsoleServer
from centre.db import Database

PASSWORDS = {"ana": "operator-pass", "vic": "viewer-pass"}


def add_accounts(db: Database) -> None:
    auth.add_user(db, "ana", PASSWORDS["ana"], "operator")
    auth.add_user(db, "vic", PASSWORDS["vic"], "viewer")


Reach = tuple[int, str, str, str]  # (step, responder, channel, state): a row of the gateway's ledger


def insert_alert(
    db: Database,
    alert_id: str,
    gateway: str,
    *,
    status: str = "notified",
    raised: float,
    body: dict[str, Any],
    reached: Sequence[Reach] = (),
) -> None:
    """An alert as the ingest stores it: the row and its latest change; ``reached``: the rows of
    the gateway's notification ledger for it, as its ``history`` messages bring them."""
    with db.transaction() as tx:
        tx.execute(
            "INSERT INTO alerts (alert_id, gateway, device, kind, priority, rule, message, status, responder, step, "
            "raised, updated) VALUES (?, ?, 'W1', 'wearable', 1, 'sos', 'SOS from W1', ?, ?, ?, ?, ?)",
            (alert_id, gateway, status, body.get("responder"), body.get("step", 0), raised, raised),
        )
        tx.execute(
            "INSERT INTO alert_changes (msg_id, alert_id, gateway, ts, status, responder, step, body) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (f"m-{alert_id}", alert_id, gateway, raised, status, body.get("responder"), 0, json.dumps(body)),
        )
        tx.executemany(
            "INSERT INTO history_notifications (gateway, id, alert_id, n, step, responder, role, channel, state, "
            "due, queued) VALUES (?, ?, ?, ?, ?, ?, 'village_doctor', ?, ?, ?, ?)",
            [
                (
                    gateway,
                    zlib.crc32(f"{alert_id}/{n}".encode()),
                    alert_id,
                    n,
                    step,
                    who,
                    channel,
                    state,
                    raised,
                    raised,
                )
                for n, (step, who, channel, state) in enumerate(reached)
            ],
        )


@dataclass
class Published:
    calls: list[tuple[str, bytes]] = field(default_factory=list)

    async def __call__(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self.calls.append((topic, payload))


@contextlib.asynccontextmanager
async def console(db: Database, publish: Any) -> AsyncIterator[ConsoleServer]:
    server = ConsoleServer(db, publish, "127.0.0.1", 0, session_hours=1.0)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


def request(
    port: int,
    method: str,
    path: str,
    *,
    form: dict[str, str] | None = None,
    cookie: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request with http.client (no redirect followed): status, headers (lower-case), body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    sent = dict(headers or {})
    body = None
    if form is not None:
        body = urlencode(form)
        sent["content-type"] = "application/x-www-form-urlencoded"
    if cookie is not None:
        sent["cookie"] = cookie
    try:
        conn.request(method, path, body=body, headers=sent)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


async def arequest(port: int, method: str, path: str, **kwargs: Any) -> tuple[int, dict[str, str], bytes]:
    return await asyncio.to_thread(request, port, method, path, **kwargs)


async def login(port: int, user: str) -> str:
    """Sign in; the cookie header value to send afterwards."""
    status, headers, _ = await arequest(port, "POST", "/login", form={"username": user, "password": PASSWORDS[user]})
    assert status == 303, status
    return headers["set-cookie"].split(";", 1)[0]
