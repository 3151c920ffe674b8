"""The operator's console: an HTTP server in the centre's loop, on ``[console] listen``.

Owns: the routes and who may use them.

- ``/healthz``: ``ok`` when the database answers (no login: for a load balancer or systemd);
- ``/static/console.js``, ``/static/console.css`` (no CDN, no build step);
- ``/login`` (GET: the form; POST: user name and password, throttled per name), ``/logout`` (POST);
- ``/``: the page, server-rendered; ``/events``: its live section over SSE (the database is
  polled every ``POLL_S``; a change, or ``REFRESH_S`` for the ages, sends it again);
  ``/snapshot.json``: the same data as JSON;
- ``/ack`` (POST, operators only): publishes ``district/v1/<gateway>/command/ack``
  ``{"v":1,"alert_id":...,"by":"operator:<name>"}`` at QoS 1 to the alert's gateway.

Every route but ``/healthz``, ``/login`` and the static files needs a session cookie (HttpOnly,
SameSite=Strict); every POST but ``/login`` needs the session's CSRF token in its form (403
without), and a POST whose ``Origin`` names another site is refused. Strict CSP: scripts and
styles from this origin only, no inline anything. HTTP/1.1 framing, connection limits and
responses are the gateway's own (``edge_agent.http.server.HttpServer``, subclassed); database
work runs in a worker thread (``asyncio.to_thread``), never on the loop.
Must not import: the service, the rollout driver, the ingest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import h11
import msgspec

from centre.config import TOPIC_ROOT, CentreConfig
from centre.console import auth
from centre.console.pages import render_live, render_login, render_page
from centre.console.readmodel import ACKABLE, read_snapshot
from centre.db import Database
from edge_agent.config import split_listen
from edge_agent.errors import ConfigError, Problem
from edge_agent.http.ack_page import MAX_FORM_BYTES
from edge_agent.http.server import HttpServer

log = logging.getLogger("centre.console")

Publish = Callable[..., Awaitable[None]]  # (topic, payload, *, retain=False): QoS 1, PUBACK waited

COOKIE = "centre_session"
POLL_S = 0.5
REFRESH_S = 15.0  # the ages on the page move even when nothing changed
SESSION_CHECK_S = 5.0  # an open stream re-reads its session this often (logout, expiry, removal)
PUBLISH_TIMEOUT_S = 10.0
MAX_STREAMS = 16

_STATIC = {
    "/static/console.js": ("console.js", "text/javascript; charset=utf-8"),
    "/static/console.css": ("console.css", "text/css; charset=utf-8"),
}
HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),  # (no-referrer would make a browser send `Origin: null` on POST)
    (b"x-frame-options", b"DENY"),
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
        b"base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
]
HTML = "text/html; charset=utf-8"


def ack_topic(gateway: str) -> str:
    return f"{TOPIC_ROOT}/{gateway}/command/ack"


def ack_payload(alert_id: str, username: str) -> bytes:
    return msgspec.json.encode({"v": 1, "alert_id": alert_id, "by": f"operator:{username}"})


class ConsoleServer(HttpServer):
    """The gateway's HTTP framing (``HttpServer``) with the console's routes."""

    def __init__(
        self,
        db: Database,
        publish: Publish,
        host: str,
        port: int,
        *,
        session_hours: float = 12.0,
        secure_cookie: bool = False,
    ) -> None:
        # not HttpServer.__init__: that one serves a gateway's view; the framing needs only these
        self.host = host
        self.requested_port = port
        self.port = port
        self.requests = 0
        self.streams = 0
        self.started = time.monotonic()
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.db = db
        self.publish = publish
        self.session_hours = session_hours
        self.secure_cookie = secure_cookie
        self.throttle = auth.LoginThrottle()
        self.clock: Callable[[], float] = time.time
        self._snap: tuple[float, dict[str, Any]] | None = None  # (monotonic time read, snapshot)
        self._snap_lock = asyncio.Lock()
        self._static_files = {
            route: (resources.files("centre.console").joinpath("static", name).read_bytes(), kind)
            for route, (name, kind) in _STATIC.items()
        }

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.requested_port, limit=16384)
        self.port = int(self._server.sockets[0].getsockname()[1])
        log.info("console on %s", self.url)

    # ----- helpers --------------------------------------------------------------------------
    async def _page(
        self,
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes | str,
        kind: str = HTML,
        *,
        head: bool = False,
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        data = body.encode() if isinstance(body, str) else body
        await self._respond(
            conn, writer, status, data, kind, head=head, extra=[*HEADERS, *(extra or [])], security=False
        )

    async def _redirect(
        self,
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        where: str,
        extra: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        await self._page(conn, writer, 303, b"", "text/plain", extra=[(b"location", where.encode()), *extra])

    async def _snapshot(self) -> dict[str, Any]:
        """The database's snapshot, read at most once per ``POLL_S`` however many streams are open."""
        async with self._snap_lock:
            if self._snap is None or time.monotonic() - self._snap[0] >= POLL_S * 0.8:
                snap = await asyncio.to_thread(read_snapshot, self.db, self.clock())
                self._snap = (time.monotonic(), snap)
            return self._snap[1]

    def _cookie(self, token: str, max_age: int) -> tuple[bytes, bytes]:
        secure = "; Secure" if self.secure_cookie else ""
        value = f"{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{secure}"
        return b"set-cookie", value.encode()

    @staticmethod
    def _header(request: h11.Request, name: bytes) -> str:
        return next((v for k, v in request.headers if k.lower() == name), b"").decode("latin-1")

    def _token(self, request: h11.Request) -> str:
        for part in self._header(request, b"cookie").split(";"):
            key, _, value = part.strip().partition("=")
            if key == COOKIE:
                return value
        return ""

    async def _session(self, request: h11.Request) -> tuple[str, auth.Session | None]:
        token = self._token(request)
        if not token:
            return "", None
        return token, await asyncio.to_thread(auth.session, self.db, token, now=self.clock())

    def _same_origin(self, request: h11.Request) -> bool:
        """A POST from a page of another site (or an opaque origin: a sandboxed frame) is refused,
        over and above SameSite and the CSRF token. No Origin at all: a client that is no browser."""
        origin = self._header(request, b"origin")
        if not origin or origin == "null":
            return origin != "null"
        return urlsplit(origin).netloc == self._header(request, b"host")

    @staticmethod
    def _form(request: h11.Request, body: bytes) -> dict[str, str] | None:
        kind = next((v for k, v in request.headers if k.lower() == b"content-type"), b"").decode("latin-1")
        if not kind.lower().startswith("application/x-www-form-urlencoded"):
            return None
        try:
            parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=8)
        except (UnicodeDecodeError, ValueError):
            return None
        return {k: v[0] for k, v in parsed.items()}

    # ----- routes ---------------------------------------------------------------------------
    async def _handle(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, request: h11.Request, body: bytes
    ) -> None:
        method = request.method.decode("ascii", "replace")
        target = urlsplit(request.target.decode("latin-1"))
        path, query = target.path, parse_qs(target.query)
        head = method == "HEAD"
        if method == "POST":
            await self._post(conn, writer, request, path, body)
            return
        if method not in ("GET", "HEAD"):
            await self._page(
                conn, writer, 405, b"GET, HEAD or POST\n", "text/plain", extra=[(b"allow", b"GET, HEAD, POST")]
            )
            return
        if path == "/healthz":
            try:
                await asyncio.to_thread(self.db.query, "SELECT 1")
            except Exception as exc:  # the database is the console's one dependency
                await self._page(conn, writer, 503, f"database: {exc}\n", "text/plain", head=head)
                return
            await self._page(conn, writer, 200, b"ok\n", "text/plain", head=head)
            return
        if path in self._static_files:
            data, kind = self._static_files[path]
            await self._page(conn, writer, 200, data, kind, head=head)
            return
        if path == "/login":
            await self._page(conn, writer, 200, render_login(), head=head)
            return
        token, current = await self._session(request)
        if current is None:
            if path == "/":
                await self._redirect(conn, writer, "/login")
            else:
                await self._page(conn, writer, 401, b"sign in first\n", "text/plain", head=head)
            return
        if path == "/":
            snap = await asyncio.to_thread(read_snapshot, self.db, self.clock())
            sent = query.get("sent", [""])[0]
            notice = f"Acknowledgement sent for alert {sent}." if sent else ""
            page = render_page(snap, current.username, current.role, current.csrf, notice)
            await self._page(conn, writer, 200, page, head=head)
        elif path == "/snapshot.json":
            snap = await asyncio.to_thread(read_snapshot, self.db, self.clock())
            await self._page(conn, writer, 200, msgspec.json.encode(snap), "application/json", head=head)
        elif path == "/events" and not head:
            await self._stream(conn, writer, token, current)
        else:
            await self._page(conn, writer, 404, b"not found\n", "text/plain", head=head)

    async def _post(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, request: h11.Request, path: str, body: bytes
    ) -> None:
        if not self._same_origin(request):
            await self._page(conn, writer, 403, b"cross-site request refused\n", "text/plain")
            return
        if len(body) > MAX_FORM_BYTES:  # the framing stops reading a body there
            await self._page(conn, writer, 413, b"form too large\n", "text/plain")
            return
        form = self._form(request, body)
        if form is None:
            await self._page(conn, writer, 400, b"expected a form (application/x-www-form-urlencoded)\n", "text/plain")
            return
        if path == "/login":
            await self._login(conn, writer, form)
            return
        token, current = await self._session(request)
        if current is None:
            await self._page(conn, writer, 401, b"sign in first\n", "text/plain")
            return
        if not auth.csrf_ok(current, form.get("csrf", "")):
            await self._page(conn, writer, 403, b"missing or wrong CSRF token: reload the page\n", "text/plain")
            return
        if path == "/logout":
            await asyncio.to_thread(auth.close_session, self.db, token)
            await self._redirect(conn, writer, "/login", (self._cookie("", 0),))
        elif path == "/ack":
            await self._operator_ack(conn, writer, current, form.get("alert_id", ""))
        else:
            await self._page(conn, writer, 404, b"not found\n", "text/plain")

    async def _login(self, conn: h11.Connection, writer: asyncio.StreamWriter, form: dict[str, str]) -> None:
        username, password = form.get("username", "").strip(), form.get("password", "")
        now = self.clock()
        if not self.throttle.allowed(username, now):
            log.warning("login for %r refused: too many failed attempts", username)
            page = render_login("Too many failed attempts for this user: try again in a few minutes.", username)
            await self._page(conn, writer, 429, page, extra=[(b"retry-after", str(int(auth.LOCKOUT_S)).encode())])
            return
        role = await asyncio.to_thread(auth.authenticate, self.db, username, password) if username else None
        if role is None:
            self.throttle.failed(username, now)
            log.warning("failed login for %r", username)
            await self._page(conn, writer, 401, render_login("Wrong user name or password.", username))
            return
        self.throttle.succeeded(username)
        token = await asyncio.to_thread(auth.open_session, self.db, username, self.session_hours, now=now)
        log.info("%s (%s) signed in", username, role)
        await self._redirect(conn, writer, "/", (self._cookie(token, int(self.session_hours * 3600)),))

    async def _operator_ack(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, current: auth.Session, alert_id: str
    ) -> None:
        if current.role != "operator":
            await self._page(conn, writer, 403, b"only an operator may acknowledge\n", "text/plain")
            return
        rows = await asyncio.to_thread(
            self.db.query, "SELECT gateway, status FROM alerts WHERE alert_id = ?", (alert_id,)
        )
        if not rows:
            await self._page(conn, writer, 404, b"no such alert\n", "text/plain")
            return
        gateway, status = str(rows[0][0]), str(rows[0][1])
        if status not in ACKABLE:
            await self._page(conn, writer, 409, f"alert is {status}: nothing to acknowledge\n", "text/plain")
            return
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                await self.publish(ack_topic(gateway), ack_payload(alert_id, current.username))
        except Exception as exc:
            log.error("acknowledgement of %s by %s not sent: %s", alert_id, current.username, exc)  # noqa: TRY400
            await self._page(conn, writer, 503, b"not sent: the broker did not confirm it; try again\n", "text/plain")
            return
        log.info("operator %s acknowledged alert %s of %s", current.username, alert_id, gateway)
        await self._redirect(conn, writer, f"/?sent={quote(alert_id)}")

    async def _stream(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, token: str, current: auth.Session
    ) -> None:
        if self.streams >= MAX_STREAMS:
            await self._page(conn, writer, 503, b"too many streams\n", "text/plain", extra=[(b"retry-after", b"5")])
            return
        self.streams += 1
        try:
            headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-store"), *HEADERS]
            await self._send(
                conn, writer, h11.Response(status_code=200, headers=headers), h11.Data(data=b"retry: 2000\n\n")
            )
            async for chunk in self._live_frames(token, current):
                await self._send(conn, writer, h11.Data(data=chunk))
        finally:
            self.streams -= 1

    async def _live_frames(self, token: str, current: auth.Session) -> AsyncIterator[bytes]:
        """SSE frames: the live section when the data changed (or REFRESH_S passed); ``expired``
        and the end when the session is gone."""
        last: Any = None
        sent_at = checked_at = time.monotonic()
        while True:
            if time.monotonic() - checked_at > SESSION_CHECK_S:
                checked_at = time.monotonic()
                if await asyncio.to_thread(auth.session, self.db, token, now=self.clock()) is None:
                    yield b"event: expired\ndata: sign in again\n\n"
                    return
            snap = await self._snapshot()
            if snap != last or time.monotonic() - sent_at > REFRESH_S:
                last, sent_at = snap, time.monotonic()
                live = render_live(snap, current.role, current.csrf, self.clock())
                yield (
                    b"event: state\n" + b"".join(b"data: " + line.encode() + b"\n" for line in live.split("\n")) + b"\n"
                )
            await asyncio.sleep(POLL_S)


async def serve_console(config: CentreConfig, db: Database, publish: Publish) -> None:
    """The console on ``[console] listen`` until cancelled."""
    section = config.file.console
    host, port = split_listen(section.listen)
    secure = (section.public_url or "").startswith("https://")
    server = ConsoleServer(db, publish, host, port, session_hours=section.session_hours, secure_cookie=secure)
    try:
        await server.start()
    except OSError as exc:
        raise ConfigError(
            [Problem(str(config.path), "console.listen", f"cannot listen on {section.listen}: {exc}")]
        ) from None
    try:
        await asyncio.Event().wait()
    finally:
        with contextlib.suppress(Exception):
            await server.close()
