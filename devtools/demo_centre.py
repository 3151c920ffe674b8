"""The district centre inside `just demo`: the console to watch the night, a rollout at dawn.

Owns: :class:`DemoCentre`: a real centre (centre/: its service with ingest, console and rollout
driver, on SQLite in the demo's work dir) subscribed to the demo's embedded broker (amqtt, so
MQTT 3.1.1), an operator account for the console with a fresh password, the centre's signing
key (the gateway trusts it), and the planner's morning: the night's shadow candidate signed as
the next version and rolled out with the real ``centre rollout`` command, then read back from
the console over HTTP the way an operator's browser gets it.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import re
import secrets
import socket
import sys
from pathlib import Path
from urllib.parse import urlencode

from centre.config import load_centre_config
from centre.console import auth
from centre.db import open_database
from centre.service import CentreService
from edge_agent.policy.bundle_sign import build_bundle, sign_bundle
from edge_agent.policy.keys import generate_private_key, key_id, public_key_to_pem

OPERATOR = "planner"


def free_listen(preferred: str) -> str:
    """``preferred`` (host:port) when its port is free, else (or for port 0) the same host on a
    port that was free a moment ago."""
    host, _, port = preferred.rpartition(":")
    with socket.socket() as probe:
        try:
            probe.bind((host, int(port)))
        except OSError:
            probe.bind((host, 0))
        return f"{host}:{probe.getsockname()[1]}"


class DemoCentre:
    def __init__(self, work: Path, console_listen: str) -> None:
        self.work = work
        self.work.mkdir(parents=True, exist_ok=True)
        self.key = generate_private_key()
        self.public_key = work / "centre.pub"
        self.public_key.write_bytes(public_key_to_pem(self.key.public_key()))
        self.listen = free_listen(console_listen)
        self.password = secrets.token_urlsafe(9)
        self.config_path = work / "centre.toml"
        self.service: CentreService | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.listen}/"

    async def start(self, broker: tuple[str, int], district: str) -> None:
        """The centre's service on the demo's broker; returns once it is subscribed."""
        host, port = broker
        self.config_path.write_text(
            f'[centre]\ndistrict = "{district}"\n'
            f'[broker]\nurl = "mqtt://{host}:{port}"\nprotocol = "3.1.1"   # amqtt speaks nothing newer\n'
            f'[database]\nurl = "sqlite:///centre.db"\n[console]\nlisten = "{self.listen}"\n'
        )
        config = load_centre_config(self.config_path)
        db = await asyncio.to_thread(open_database, config.database_url)
        try:
            await asyncio.to_thread(auth.add_user, db, OPERATOR, self.password, "operator")
        finally:
            db.close()
        self.service = CentreService(config)
        self._task = asyncio.create_task(self.service.run())
        async with asyncio.timeout(30):
            await self.service.ready.wait()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def bundle(self, policy: Path, version: int, gateway: str, district: str, now: float) -> Path:
        """``policy`` signed by the centre as ``version`` for ``gateway``, valid from ``now`` (the
        demo's accelerated clock: a bundle is checked against the gateway's time); its file."""
        now = int(now)
        envelope = build_bundle(
            policy.read_bytes(),
            kind="policy",
            district=district,
            gateways=[gateway],
            version=version,
            issued_at=now,
            not_before=now - 60,
            expires=now + 30 * 86_400,
            key_id=key_id(self.key.public_key()),
            force=True,  # the demo signs without the twin's validation record (README: from twin to signed policy)
        )
        path = self.work / f"{policy.stem}-v{version}.bundle"
        path.write_bytes(sign_bundle(envelope, self.key))
        return path

    async def rollout(self, bundle: Path, gateway: str) -> int:
        """``centre rollout BUNDLE`` as a planner types it (its progress on this terminal), driven
        by the running service; the command's exit code (0: succeeded)."""
        command = [sys.executable, "-m", "centre.cli", "rollout", str(bundle), "-c", str(self.config_path)]
        command += ["--canary", "0", "--waves", "100%", "--gateways", gateway, "--timeout", "2m"]
        process = await asyncio.create_subprocess_exec(*command)
        return await process.wait()

    def console_page(self) -> str:
        """The console's page after logging in as the operator (plain HTTP, as a browser does)."""
        host, _, port = self.listen.rpartition(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            conn.request(
                "POST",
                "/login",
                body=urlencode({"username": OPERATOR, "password": self.password}),
                headers={"content-type": "application/x-www-form-urlencoded", "origin": self.url.rstrip("/")},
            )
            response = conn.getresponse()
            response.read()
            cookie = (response.getheader("set-cookie") or "").split(";", 1)[0]
            conn.request("GET", "/", headers={"cookie": cookie})
            return conn.getresponse().read().decode()
        finally:
            conn.close()

    @staticmethod
    def rollout_row(page: str, version: int) -> str | None:
        """The console's row for the rollout of ``version`` as text (cells joined), if shown."""
        for row in re.findall(r"<tr data-rollout=.*?</tr>", page, flags=re.S):
            cells = [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<td>(.*?)</td>", row, flags=re.S)]
            if len(cells) > 1 and cells[1] == f"v{version}":
                return " | ".join(cells)
        return None
