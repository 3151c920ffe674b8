"""Off loopback the HTTP face needs its token: 401 without it, the page and metrics with it."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.clock import ManualClock
from edge_agent.errors import ConfigError
from tests.agent.harness import T0, running
from tests.conftest import BrokerInfo
from tests.http.helpers import aget, http_gateway

TOKEN = "s3cret-token-of-the-village-gw"


async def test_a_non_loopback_listener_answers_401_without_the_token(
    tmp_path: Path, mqtt_broker: BrokerInfo, unique_id: str
) -> None:
    token_file = tmp_path / "http.token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    # every interface (0.0.0.0): the test still talks to it over loopback only
    config = http_gateway(tmp_path, unique_id, mqtt_broker.port, {"listen": "0.0.0.0:0", "token_file": "http.token"})
    async with running(config, ManualClock(T0)) as agent:
        assert agent.http is not None and agent.http.host == "0.0.0.0"
        base = f"http://127.0.0.1:{agent.http.port}"
        for path in ("/", "/metrics", "/events", "/status.json", "/static/status.js"):
            status, headers, _ = await aget(base + path)
            assert status == 401, path
            assert headers["www-authenticate"].startswith("Bearer")
        status, _, _ = await aget(base + "/metrics", {"Authorization": "Bearer wrong-token-wrong-token"})
        assert status == 401
        status, _, body = await aget(base + "/metrics", {"Authorization": f"Bearer {TOKEN}"})
        assert status == 200 and b"edge_agent_policy_version" in body
        # a browser opens the page once with ?token=: a cookie then carries it (the page's SSE too)
        status, headers, body = await aget(f"{base}/?token={TOKEN}")
        assert status == 200 and b"gateway status" in body
        cookie = headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        status, _, _ = await aget(base + "/status.json", {"Cookie": cookie.split(";", 1)[0]})
        assert status == 200


def test_a_non_loopback_listener_without_a_token_is_a_config_error(tmp_path: Path, unique_id: str) -> None:
    with pytest.raises(ConfigError, match=r"http\.listen.*not loopback"):
        http_gateway(tmp_path, unique_id, 1883, {"listen": "0.0.0.0:9180"})
