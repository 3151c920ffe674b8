"""The gateway's HTTP face: an asyncio server in the agent's own loop (no thread).

Owns: listening (``[http] listen``, loopback by default), HTTP/1.1 framing with ``h11`` on
asyncio streams, the token check, and the routes:

- ``/metrics``: Prometheus exposition of the gateway's state (``metrics.GatewayCollector``);
- ``/``: the status page, server-rendered; ``/events``: its SSE stream; ``/status.json``;
- ``/static/status.js``, ``/static/status.css``: the page's script and style (no CDN);
- ``/answer/<token>``: a responder's acknowledge link from a push (``ack_page``): GET shows the
  alert and its buttons, the buttons' POST acknowledges or resolves through
  ``actions.GatewayActions``. The token is this route's whole credential: 403 for one that names
  no alert, and the operator's token below is neither needed nor accepted in its place.

Everything else is read-only (GET or HEAD) and read through a ``readmodel.GatewayView`` the
agent hands over (this package imports nothing of ``edge_agent.agent``).
Auth: with a token configured (required on a non-loopback address) every request carries it,
as ``Authorization: Bearer``, the ``edge_token`` cookie (set when the page is opened with
``?token=``, so the page's own EventSource carries it) or ``?token=``; else 401. Without a token
(loopback only), the Host header must name a loopback host (a web page elsewhere cannot read
the status by DNS rebinding).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import cast
from urllib.parse import parse_qs, urlsplit

import h11
import msgspec

from edge_agent.config import split_listen
from edge_agent.config.schema import Http
from edge_agent.errors import ConfigError, Problem
from edge_agent.http import ack_page
from edge_agent.http.actions import GatewayActions
from edge_agent.http.metrics import CONTENT_TYPE, build_registry, exposition
from edge_agent.http.readmodel import GatewayView
from edge_agent.http.status import render_live, render_page, snapshot
from edge_agent.loopback import is_loopback

log = logging.getLogger("edge_agent.http")

MAX_CONNECTIONS = 32  # an operator's browser or two and a Prometheus: more is a mistake or abuse
MAX_STREAMS = 8  # open SSE streams
READ_TIMEOUT_S = 10.0  # for a request's head, once connected
SSE_TICK_S = 0.5  # how often a stream looks for a change
SSE_KEEPALIVE_S = 15.0
COOKIE = "edge_token"

_STATIC = {
    "/static/status.js": ("status.js", "text/javascript; charset=utf-8"),
    "/static/status.css": ("status.css", "text/css; charset=utf-8"),
}
_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
        b"base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
]


def read_token(http: Http, source: Path) -> str | None:
    """The token ``[http]`` sets, or the first line of its ``token_file`` (relative to the
    gateway file ``source``); None without either."""
    if http.token is not None:
        return http.token
    if http.token_file is None:
        return None
    path = source.parent / http.token_file
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise ConfigError([Problem(str(source), "http.token_file", f"cannot read it: {exc.strerror}")]) from None
    token = lines[0].strip() if lines else ""
    if len(token) < 16:
        raise ConfigError([Problem(str(source), "http.token_file", "a token of at least 16 characters")])
    return token


class HttpServer:
    def __init__(
        self, view: GatewayView, host: str, port: int, token: str | None, actions: GatewayActions | None = None
    ) -> None:
        self.view = view
        self.actions = actions  # None: no /ack route
        self.host = host
        self.requested_port = port
        self.port = port  # the bound port once started (port 0: a free one)
        self.token = token
        self.registry = build_registry(view)
        self.started = time.monotonic()
        self.requests = 0
        self.streams = 0
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._static = {
            route: (resources.files("edge_agent.http").joinpath("static", name).read_bytes(), kind)
            for route, (name, kind) in _STATIC.items()
        }

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.requested_port, limit=16384)
        self.port = int(self._server.sockets[0].getsockname()[1])
        log.info("status page and /metrics on %s", self.url)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        for task in list(self._connections):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    # ----- connections ----------------------------------------------------------------------
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._connections) >= MAX_CONNECTIONS:
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, TimeoutError, h11.ProtocolError):
            pass
        except Exception:
            log.exception("http connection failed")
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=16384)
        while True:
            event = await self._next(conn, reader)
            if isinstance(event, h11.ConnectionClosed):
                return
            if not isinstance(event, h11.Request):
                return
            body = b""
            while not isinstance(part := await self._next(conn, reader), h11.EndOfMessage):
                if isinstance(part, h11.Data) and len(body) <= ack_page.MAX_FORM_BYTES:
                    body += part.data  # only the /ack form has a body; beyond the limit: 413
            self.requests += 1
            await self._handle(conn, writer, event, body)
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()

    async def _next(self, conn: h11.Connection, reader: asyncio.StreamReader) -> h11.Event | type[h11.PAUSED]:
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return cast("h11.Event | type[h11.PAUSED]", event)
            async with asyncio.timeout(READ_TIMEOUT_S):  # (3.11's wait_for can swallow a cancellation)
                data = await reader.read(16384)
            conn.receive_data(data)

    async def _send(self, conn: h11.Connection, writer: asyncio.StreamWriter, *events: h11.Event) -> None:
        for event in events:
            data = conn.send(event)
            if data:
                writer.write(data)
        await writer.drain()

    async def _respond(
        self,
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes,
        content_type: str,
        *,
        head: bool = False,
        extra: list[tuple[bytes, bytes]] | None = None,
        security: bool = True,
    ) -> None:
        """``security=False``: ``extra`` brings the page's own security headers."""
        headers = [
            (b"content-type", content_type.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
            *(_SECURITY_HEADERS if security else []),
            *(extra or []),
        ]
        events: list[h11.Event] = [h11.Response(status_code=status, headers=headers)]
        if not head:
            events.append(h11.Data(data=body))
        events.append(h11.EndOfMessage())
        await self._send(conn, writer, *events)

    # ----- routes ---------------------------------------------------------------------------
    def _authorized(self, request: h11.Request, query: dict[str, list[str]]) -> tuple[bool, bool]:
        """(allowed, came with ?token=) for this request."""
        headers = {name.lower(): value for name, value in request.headers}
        if self.token is None:
            host = headers.get(b"host", b"").decode("latin-1")
            name = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1:].split("]", 1)[0]
            return is_loopback(name), False
        offered: list[str] = []
        auth = headers.get(b"authorization", b"").decode("latin-1")
        if auth.lower().startswith("bearer "):
            offered.append(auth[7:].strip())
        for part in headers.get(b"cookie", b"").decode("latin-1").split(";"):
            key, _, value = part.strip().partition("=")
            if key == COOKIE:
                offered.append(value)
        from_query = query.get("token", [])
        offered.extend(from_query)
        expected = self.token.encode()
        ok = any(hmac.compare_digest(candidate.encode(), expected) for candidate in offered)
        return ok, ok and bool(from_query)

    async def _handle(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, request: h11.Request, body: bytes
    ) -> None:
        method = request.method.decode("ascii", "replace")
        target = urlsplit(request.target.decode("latin-1"))
        path, query = target.path, parse_qs(target.query)
        head = method == "HEAD"
        if path.startswith("/answer/") and self.actions is not None:
            await self._ack(conn, writer, request, path.removeprefix("/answer/"), body)
            return
        if method not in ("GET", "HEAD"):
            await self._respond(conn, writer, 405, b"read-only\n", "text/plain", extra=[(b"allow", b"GET, HEAD")])
            return
        allowed, with_query_token = self._authorized(request, query)
        if not allowed:
            await self._respond(
                conn, writer, 401, b"token required\n", "text/plain", head=head,
                extra=[(b"www-authenticate", b'Bearer realm="edge-agent"')],
            )  # fmt: skip
            return
        if path == "/metrics":
            body = exposition(self.registry)  # in the loop: the store is the loop's own
            await self._respond(conn, writer, 200, body, CONTENT_TYPE, head=head)
        elif path == "/":
            cookie: list[tuple[bytes, bytes]] = []
            if with_query_token and self.token is not None:
                cookie = [(b"set-cookie", f"{COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/".encode())]
            page = render_page(snapshot(self.view, self.started)).encode()
            await self._respond(conn, writer, 200, page, "text/html; charset=utf-8", head=head, extra=cookie)
        elif path == "/status.json":
            body = msgspec.json.encode(snapshot(self.view, self.started))
            await self._respond(conn, writer, 200, body, "application/json", head=head)
        elif path in self._static:
            data, kind = self._static[path]
            await self._respond(conn, writer, 200, data, kind, head=head)
        elif path == "/events" and not head:
            await self._events(conn, writer)
        else:
            await self._respond(conn, writer, 404, b"not found\n", "text/plain", head=head)

    async def _ack(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, request: h11.Request, token: str, body: bytes
    ) -> None:
        assert self.actions is not None
        method = request.method.decode("ascii", "replace")
        html, headers = "text/html; charset=utf-8", ack_page.HEADERS
        if method not in ("GET", "HEAD", "POST"):
            allow = [(b"allow", b"GET, HEAD, POST"), *headers]
            await self._respond(conn, writer, 405, b"GET or POST\n", "text/plain", extra=allow, security=False)
            return
        target = self.actions.ack_target(token)
        if method != "POST":
            status, page = (
                (200, ack_page.render_ack(target)) if target else (403, ack_page.render_outcome("forged", None))
            )
            await self._respond(conn, writer, status, page, html, head=method == "HEAD", extra=headers, security=False)
            return
        if len(body) > ack_page.MAX_FORM_BYTES:
            await self._respond(conn, writer, 413, b"form too large\n", "text/plain", extra=headers, security=False)
            return
        kind = next((v for k, v in request.headers if k.lower() == b"content-type"), b"").decode("latin-1")
        action = ack_page.read_action(body, kind)
        if action is None and target is not None:
            bad = b"action=ack or action=resolve\n"
            await self._respond(conn, writer, 400, bad, "text/plain", extra=headers, security=False)
            return
        # a forged token is refused (and counted) by the agent, whatever the form says
        outcome = await self.actions.push_ack(token, action or "ack")
        target = self.actions.ack_target(token)  # as it is now
        status = 403 if outcome == "forged" else 200
        page = ack_page.render_outcome(outcome, target)
        await self._respond(conn, writer, status, page, html, extra=headers, security=False)

    async def _events(self, conn: h11.Connection, writer: asyncio.StreamWriter) -> None:
        if self.streams >= MAX_STREAMS:
            await self._respond(conn, writer, 503, b"too many streams\n", "text/plain", extra=[(b"retry-after", b"5")])
            return
        self.streams += 1
        try:
            headers = [
                (b"content-type", b"text/event-stream"),
                (b"cache-control", b"no-store"),
                (b"x-accel-buffering", b"no"),
                *_SECURITY_HEADERS,
            ]
            await self._send(
                conn, writer, h11.Response(status_code=200, headers=headers), h11.Data(data=b"retry: 2000\n\n")
            )
            async for chunk in self._changes():
                await self._send(conn, writer, h11.Data(data=chunk))
        finally:
            self.streams -= 1

    async def _changes(self) -> AsyncIterator[bytes]:
        """SSE frames: the live section each time it changed, a comment now and then."""
        last = ""
        quiet_since = time.monotonic()
        while True:
            live = render_live(snapshot(self.view, self.started))
            if live != last:
                last = live
                quiet_since = time.monotonic()
                yield (
                    b"event: state\n" + b"".join(b"data: " + line.encode() + b"\n" for line in live.split("\n")) + b"\n"
                )
            elif time.monotonic() - quiet_since > SSE_KEEPALIVE_S:
                quiet_since = time.monotonic()
                yield b": keepalive\n\n"
            await asyncio.sleep(SSE_TICK_S)


@contextlib.asynccontextmanager
async def serve_http(
    view: GatewayView,
    http: Http,
    source: Path,
    listen: str | None = None,
    actions: GatewayActions | None = None,
) -> AsyncIterator[HttpServer | None]:
    """The HTTP face for the agent's lifetime, or None when disabled or the port is taken (the
    gateway's work does not depend on it: logged, and the agent runs on). ``http``: the
    gateway file's ``[http]`` table, ``source``: that file; ``listen`` overrides the address;
    ``actions``: what the ``/ack`` route may do (None: no such route)."""
    if not http.enabled and listen is None:
        yield None
        return
    host, port = split_listen(listen or http.listen)
    token = read_token(http, source)
    if token is None and not is_loopback(host):
        raise ConfigError([Problem(str(source), "http.listen", "a non-loopback address needs a token")])
    server = HttpServer(view, host, port, token, actions)
    try:
        await server.start()
    except OSError as exc:
        log.error("status page and /metrics not served: cannot listen on %s:%s: %s", host, port, exc)  # noqa: TRY400
        yield None
        return
    try:
        yield server
    finally:
        await server.close()
