"""A push service on 127.0.0.1 for the push tests: a real HTTP server on a free port that keeps
every POST it receives and answers with the status the test sets (200, or 500 for a service in
trouble). Apprise's ``json://`` and ``ntfy://`` URLs point at it; nothing goes to the internet."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Received:
    path: str
    body: dict[str, Any]


@dataclass
class PushService:
    port: int
    status: int = 200
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def pushes(self) -> list[Received]:
        with self.lock:
            return list(self.received)


@contextmanager
def push_service() -> Iterator[PushService]:
    service = PushService(port=0)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length", "0")))
            with service.lock:
                service.received.append(Received(self.path, json.loads(raw)))
            self.send_response(service.status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    service.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield service
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def closed_port() -> int:
    """A port on 127.0.0.1 nobody listens on (bound, then released): a push service that is down."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
