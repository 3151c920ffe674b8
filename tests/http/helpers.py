"""Helpers for the HTTP face's tests: a gateway with ``[http]`` on a free port, and a GET."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from edge_agent.config import GatewayConfig
from tests.agent.harness import SOS_RULE, write_gateway


def http_gateway(tmp_path: Path, gw: str, port: int, http: dict[str, Any] | None = None) -> GatewayConfig:
    """The test village on one broker (south and north), its ``[http]`` on a free loopback port."""
    return write_gateway(tmp_path, gw, port, SOS_RULE, extra={"http": {"listen": "127.0.0.1:0", **(http or {})}})


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """A plain GET (urllib: the client a script or a curl would be); status, headers, body."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


async def aget(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    return await asyncio.to_thread(get, url, headers)
