"""Helpers for the HTTP face's tests: a gateway with ``[http]`` on a free port, and a scraper."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from devtools.gateway_config import write_gateway_config
from edge_agent.agent.app import Agent
from edge_agent.clock import Clock
from edge_agent.config import GatewayConfig, load_config
from tests.agent.harness import POLICY_HEAD, SOS_RULE

T0 = datetime(2026, 1, 1, 8, 0, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()


def http_gateway(tmp_path: Path, gw: str, port: int, http: dict[str, Any] | None = None) -> GatewayConfig:
    """The test village on one broker (south and north), its ``[http]`` on a free loopback port."""
    url = f"mqtt://127.0.0.1:{port}"
    path = write_gateway_config(
        tmp_path,
        gw,
        south_url=url,
        north_url=url,
        policy_text=POLICY_HEAD + SOS_RULE,
        extra={"http": {"listen": "127.0.0.1:0", **(http or {})}},
    )
    return load_config(path)


@contextlib.asynccontextmanager
async def serving(config: GatewayConfig, clock: Clock) -> AsyncIterator[Agent]:
    agent = Agent(config, clock)
    task = asyncio.create_task(agent.run())
    try:
        await asyncio.wait_for(agent.ready.wait(), 15)
        assert agent.http is not None, "the HTTP face did not start"
        yield agent
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


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
