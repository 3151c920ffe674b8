"""The centre in tests: its file, the service in-process or as a real `centre run` process, a publisher.

Owns: ``write_centre`` (a centre.toml for a broker and a database), ``centre_in_process`` (the
service on the test's loop), ``CentreProcess`` (``python -m centre.cli run`` with its log in a
file, waited for until its link is up), ``publish_all`` (QoS 1, every PUBACK waited) and
``eventually``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import aiomqtt

from centre.config import load_centre_config
from centre.service import CentreService
from edge_agent.transports.broker import free_port

ROOT = Path(__file__).resolve().parents[2]


def write_centre(
    folder: Path,
    port: int,
    database_url: str,
    *,
    centre_id: str,
    shared_group: str = "",
    scheme: str = "mqtt",
    ca: Path | None = None,
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    tls = f'\n[broker.tls]\nca = "{ca}"\n' if ca is not None else ""
    text = (
        f'[centre]\ndistrict = "naxi"\nid = "{centre_id}"\n\n'
        f'[broker]\nurl = "{scheme}://127.0.0.1:{port}"\nusername = "centre"\nshared_group = "{shared_group}"\n'
        f"reconnect_min = 0.1\nreconnect_max = 0.5\n{tls}\n"
        f'[database]\nurl = "{database_url}"\n\n'
        f'[console]\nlisten = "127.0.0.1:{free_port()}"\n'  # never the default port: centres run side by side
    )
    path = folder / "centre.toml"
    path.write_text(text)
    return path


async def eventually(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what} (last: {value!r})")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def centre_in_process(path: Path) -> AsyncIterator[CentreService]:
    service = CentreService(load_centre_config(path))
    task = asyncio.create_task(service.run())
    try:
        await eventually(lambda: task.done() or (service.link is not None and service.link.connected), what="link up")
        if task.done():
            task.result()
        yield service
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def publish_all(port: int, messages: Sequence[tuple[str, bytes]], *, retain: bool = False, **tls: Any) -> None:
    async with aiomqtt.Client(
        "127.0.0.1", port, identifier=f"pub-{os.getpid()}-{time.monotonic_ns()}", **tls
    ) as client:
        for topic, payload in messages:
            await client.publish(topic, payload, qos=1, retain=retain)


class CentreProcess:
    """``centre run -c path -v`` as a child process (the real CLI), its log in ``log``."""

    def __init__(self, path: Path, name: str, env: dict[str, str] | None = None) -> None:
        self.path = path
        self.log = path.parent / f"{name}.log"
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout: float = 15.0) -> None:
        self.starts += 1
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "centre.cli", "run", "-c", str(self.path), "-v"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=ROOT,
            )
        deadline = time.monotonic() + timeout
        while self.text().count("link connected") < self.starts:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"centre did not connect:\n{self.text()[-3000:]}")
            time.sleep(0.05)

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def committed(self, *, since_start: int = 1) -> int:
        """Messages this process committed (from its debug log) since its ``since_start``-th start."""
        return self._sum("ingest: committed ", since_start)

    def duplicates(self, *, since_start: int = 1) -> int:
        """Messages it skipped as already taken, since its ``since_start``-th start."""
        return self._sum(" rejected, ", since_start)

    def _sum(self, marker: str, since_start: int) -> int:
        total = 0
        runs = self.text().split("link connected")
        for run in runs[since_start:]:
            for line in run.splitlines():
                if "ingest: committed " in line:
                    total += int(line.split(marker, 1)[1].split()[0])
        return total

    def wait_killed(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> int | None:
        """SIGTERM, and its exit code (None if it had to be killed)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                return None
        return self.proc.returncode
