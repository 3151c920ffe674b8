"""systemd's notifications from a running agent: READY=1 once serving, WATCHDOG=1 from its loop.

A real unix datagram socket stands in for systemd's NOTIFY_SOCKET; the agent runs in a child
process, as systemd would start it, with WATCHDOG_USEC set (WatchdogSec=1 -> a ping every 0.5 s).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_agent.agent import sdnotify
from tests.conftest import BrokerInfo
from tests.http.helpers import http_gateway

ROOT = Path(__file__).resolve().parents[2]


def _receive(sock: socket.socket, until: float) -> list[str]:
    got: list[str] = []
    while time.monotonic() < until:
        sock.settimeout(max(0.01, until - time.monotonic()))
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            break
    return got


def test_a_running_agent_says_ready_and_pings_the_watchdog(
    tmp_path: Path, mqtt_broker: BrokerInfo, unique_id: str
) -> None:
    config = http_gateway(tmp_path, unique_id, mqtt_broker.port)
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        env = {**os.environ, "NOTIFY_SOCKET": address, "WATCHDOG_USEC": "1000000"}
        env.pop("WATCHDOG_PID", None)
        log = tmp_path / "agent.log"
        with log.open("wb") as out:
            agent = subprocess.Popen(
                [sys.executable, "-m", "edge_agent.cli", "run", "-c", str(config.path)],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            messages: list[str] = []
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not any("READY=1" in m for m in messages):
                messages += _receive(sock, time.monotonic() + 0.5)
            assert any("READY=1" in m for m in messages), log.read_text()
            ready_at = time.monotonic()
            later = _receive(sock, ready_at + 2.2)
            pings = [m for m in later if "WATCHDOG=1" in m]
            assert len(pings) >= 3, later  # every 0.5 s, from the agent's loop
            assert all("STATUS=serving" in m for m in pings)
            agent.send_signal(signal.SIGTERM)
            assert agent.wait(20) == 0, log.read_text()
            assert "stopped after" in log.read_text()  # a clean shutdown: flushed, store closed
            rest = _receive(sock, time.monotonic() + 0.5)
            assert any("STOPPING=1" in m for m in rest), rest
        finally:
            if agent.poll() is None:
                agent.kill()
                agent.wait()


def test_without_systemd_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert sdnotify.notify("READY=1") is False
    assert sdnotify.watchdog_interval() is None


def test_a_watchdog_meant_for_another_process_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert sdnotify.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sdnotify.watchdog_interval() == 2.0
