"""The centre inside `just fleet`: ingest and rollout driver in the fleet's own process.

Owns: :class:`FleetCentre`, the fleet run's view of a real centre (centre/: its service on
SQLite in the work dir, the fleet's broker): it starts and stops the service for a phase,
creates the rollout (canary wave, then ``waves``) and reads back from the centre's database
when each wave was published and how the rollout ended. A centre that dies mid-phase ends the
run with its error instead of a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

from centre.cli_rollout import driving_service
from centre.config import load_centre_config
from centre.db import Database, open_database
from centre.rollout import Plan, make_plan
from centre.rollout_driver import Status, create_rollout, rollout_status


class FleetCentre:
    def __init__(self, work: Path, port: int, *, canary: int, waves: str) -> None:
        self.canary = canary
        self.waves = waves
        (work / "centre.toml").write_text(
            f'[broker]\nurl = "mqtt://127.0.0.1:{port}"\n[database]\nurl = "sqlite:///centre.db"\n'
        )
        self.config = load_centre_config(work / "centre.toml")
        self._task: asyncio.Task[None] | None = None
        self._db: Database | None = None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[FleetCentre]:
        """The centre's service (ingest + rollout driver) for the length of one phase."""
        self._task = asyncio.create_task(driving_service(self.config).run())
        self._db = await asyncio.to_thread(open_database, self.config.database_url)
        try:
            yield self
        finally:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            self._db.close()
            self._db = None

    @property
    def db(self) -> Database:
        assert self._db is not None, "use FleetCentre.running()"
        return self._db

    def alive(self) -> None:
        task = self._task
        if task is not None and task.done():
            raise SystemExit(f"the centre stopped: {task.exception() if not task.cancelled() else 'cancelled'}")

    def plan(self, timeout: float) -> Plan:
        return make_plan(
            canary=self.canary, waves=self.waves, abort_if="rejected > 0", window=None, timeout=max(1.0, timeout)
        )

    async def start_rollout(self, envelope: bytes, gateways: list[str], timeout: float) -> tuple[str, list[str]]:
        """A rollout of ``envelope`` in the centre's database (its driver publishes it wave by
        wave); returns its id and the canary wave's gateways."""
        rollout_id = await asyncio.to_thread(
            create_rollout, self.db, envelope, gateways, self.plan(timeout), time.time()
        )
        return rollout_id, await asyncio.to_thread(self.wave_gateways, rollout_id, 0)

    def wave_gateways(self, rollout_id: str, wave: int) -> list[str]:
        rows = self.db.query(
            "SELECT gateway FROM rollout_targets WHERE rollout_id = ? AND wave = ?", (rollout_id, wave)
        )
        return sorted(str(r[0]) for r in rows)

    def started_stamps(self, rollout_id: str) -> list[tuple[str, float]]:
        """(gateway, wall clock the centre published to it) for every gateway it published to."""
        rows = self.db.query(
            "SELECT gateway, started FROM rollout_targets WHERE rollout_id = ? AND started IS NOT NULL",
            (rollout_id,),
        )
        return [(str(gw), float(ts)) for gw, ts in rows]

    async def wave_started(self, rollout_id: str, deadline: float) -> float | None:
        """When the centre published the first wave after the canary (wall clock), or None if
        the rollout ended before (or ``deadline``, monotonic, passed)."""
        while time.monotonic() < deadline:
            self.alive()
            rows = await asyncio.to_thread(
                self.db.query,
                "SELECT MIN(started) FROM rollout_targets WHERE rollout_id = ? AND wave = 1",
                (rollout_id,),
            )
            if rows and rows[0][0] is not None:
                return float(rows[0][0])
            status = await asyncio.to_thread(rollout_status, self.db, rollout_id)
            if status is not None and status.state not in ("running", "waiting_window"):
                return None
            await asyncio.sleep(0.01)
        return None

    async def ended(self, rollout_id: str, deadline: float) -> Status:
        """The rollout's status once it ended (or at ``deadline``, monotonic)."""
        while True:
            self.alive()
            status = await asyncio.to_thread(rollout_status, self.db, rollout_id)
            assert status is not None
            if status.state not in ("running", "waiting_window") or time.monotonic() > deadline:
                return status
            await asyncio.sleep(0.1)

    def status(self, rollout_id: str) -> Status | None:
        return rollout_status(self.db, rollout_id)
