"""The centre's process: the composition root of ``centre run``.

Owns: one asyncio loop running the MQTT link (MQTT 5, persistent session, inbound QoS 1
acknowledged only after the batch's COMMIT returned), the ingest (centre/ingest.py), the
retention pruner (raw telemetry and seen message ids older than ``[retention] raw_days``), the
console's HTTP server and the rollout driver when those modules are installed, and a clean stop
on SIGTERM / SIGINT. Every database write runs in ONE worker thread (batches commit in the order
they were read), never on the loop; the batches the link handed over while a COMMIT ran are
written together as the next transaction. With ``[broker] shared_group`` the north classes are
subscribed as ``$share/<group>/...`` except the retained ``status`` and ``rollout`` (a broker sends
no retained message to a shared subscription; both are idempotent, so every process takes them).
``CENTRE_TEST_KILL_AFTER_COMMITS=N`` (the crash test's seam) kills the process with SIGKILL right
after its Nth COMMIT returned, before that batch's acknowledgements.
What the parts get: ``db``, ``publish(topic, payload, *, retain=False)`` (QoS 1, returns after
the broker's PUBACK) and a clock.
Must not import: nothing of the console or the rollout driver at module level (they are optional:
imported guarded in ``_optional_tasks``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from centre.config import TOPIC_ROOT, CentreConfig, link_settings
from centre.db import Database, open_database
from centre.ingest import HANDLERS, Batch, Ingest, merge
from edge_agent.transports.link import SYNC, Handled
from edge_agent.transports.mqtt import MqttLink

log = logging.getLogger(__name__)

# the north classes the centre reads (edge_agent/agent/topics.py TOPIC_CLASSES, north side)
NORTH_FILTERS = ("status", "alert", "event/#", "telemetry/lamp/+", "policy/ack", "rollout", "shadow/report")
PRUNE_EVERY_S = 3600.0
# the crash test's seam (tests/centre/test_service.py): kill -9 this process right after the Nth
# batch's COMMIT returned and before its acknowledgements go out
KILL_AFTER_COMMITS = "CENTRE_TEST_KILL_AFTER_COMMITS"

Publish = Callable[..., Awaitable[None]]


# retained, without a msg_id, idempotent to apply twice: with a shared group every process also
# takes them on a plain subscription (a broker never sends retained messages to a shared one)
RETAINED = ("status", "rollout")
STATS_EVERY_S = 60.0


def load_extensions() -> None:
    """Import the modules that register handlers for more north classes (centre/history.py:
    ``health``, ``history``), when installed, so that their topics are subscribed to."""
    try:
        import centre.history  # noqa: F401  # type: ignore[import-not-found,unused-ignore]
    except ModuleNotFoundError as exc:
        _raise_unless_absent(exc, "centre.history")
        log.info("centre: no history module; health and history messages are not taken")


def subscriptions(config: CentreConfig) -> list[tuple[str, int]]:
    """The link's filters: every north class, plus the classes registered by other modules."""
    group = config.file.broker.shared_group
    prefix = f"$share/{group}/" if group else ""
    classes = list(NORTH_FILTERS) + [f"{name}/#" for name in sorted(HANDLERS)]
    if not group:
        return [(f"{TOPIC_ROOT}/+/{name}", 1) for name in classes]
    shared = [(f"{prefix}{TOPIC_ROOT}/+/{name}", 1) for name in classes if name not in RETAINED]
    return shared + [(f"{TOPIC_ROOT}/+/{name}", 1) for name in RETAINED]


def prune(db: Database, raw_days: float, now: float) -> tuple[int, int]:
    """Delete raw telemetry and seen message ids older than ``raw_days``: (telemetry, ids) deleted."""
    cutoff = now - raw_days * 86_400.0
    with db.transaction() as tx:
        telemetry = tx.execute("DELETE FROM lamp_telemetry WHERE ts < ?", (cutoff,))
        seen = tx.execute("DELETE FROM seen_messages WHERE received < ?", (cutoff,))
    return telemetry, seen


class CentreService:
    """The running centre (``run`` until cancelled)."""

    def __init__(self, config: CentreConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.db: Database | None = None
        self.ingest: Ingest | None = None
        self.link: MqttLink | None = None
        self.commits = 0
        self.commit_failures = 0
        # one writer thread: batches commit in the order the link read them
        self._writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="centre-db")
        self.ready = asyncio.Event()
        self._pending: list[tuple[Batch, asyncio.Future[bool]]] = []
        self._wake = asyncio.Event()
        self._failed = False  # a COMMIT failed: refuse the rest until the link connects again
        self._kill_after = int(os.environ.get(KILL_AFTER_COMMITS, "0") or 0)

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """QoS 1 publish; returns after the broker's PUBACK. Waits for the link while it is down
        (connecting, reconnecting) up to its publish timeout; TransportError when it cannot."""
        assert self.link is not None
        if not self.link.connected:
            await self.link.wait_connected(self.link.settings.publish_timeout)
        await self.link.publish(topic, payload, qos=1, retain=retain)

    async def write(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the writer thread."""
        return await asyncio.get_running_loop().run_in_executor(self._writer, fn, *args)

    async def _on_message(self, topic: str, payload: bytes) -> Handled:
        assert self.ingest is not None
        try:
            self.ingest.take(topic, payload)
        except Exception:  # a bug of ours must not stop ingestion either: counted, logged
            log.exception("ingest: cannot take the message on %s", topic)
            self.ingest.reject("internal_error", "?", topic)
        return SYNC

    def _commit(self) -> Awaitable[bool]:
        """The link's commit: the batch queued for the writer; resolves True once COMMIT returned."""
        assert self.ingest is not None
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((self.ingest.detach(), done))
        self._wake.set()
        return done

    def _connected(self) -> None:
        self._failed = False
        if self.ingest is not None:
            self.ingest.detach()  # what was taken on the lost connection comes again

    async def _write_batches(self) -> None:
        """Commit what the link handed over, in order. The batches that queued up while the
        previous COMMIT ran go as ONE transaction: the link reads small batches when messages
        trickle in, and one commit per few messages would cap the rate at the disk's fsyncs."""
        assert self.ingest is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                work, self._pending = self._pending, []
                # after a failed COMMIT the link reconnects and the broker delivers everything
                # unacknowledged again, in order: nothing after the failure may commit before it
                ok = not self._failed and await self._commit_batch(merge([batch for batch, _ in work]))
                self._failed = not ok
                for _, done in work:
                    if not done.done():
                        done.set_result(ok)

    async def _commit_batch(self, batch: Batch) -> bool:
        assert self.ingest is not None
        try:
            duplicates = await self.write(self.ingest.flush, batch)
        except Exception:
            self.commit_failures += 1
            log.exception(
                "ingest: the batch of %d messages was not committed (the broker delivers it again)", len(batch.items)
            )
            return False
        self.commits += 1
        log.debug(
            "ingest: committed %d messages, %d rejected, %d duplicates",
            len(batch.items),
            sum(batch.rejects.values()),
            duplicates,
        )
        if self._kill_after and self.commits >= self._kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
        return True

    async def run(self) -> None:
        config = self.config
        log.info("centre %s: database %s", config.file.centre.id, _safe_url(config.database_url))
        self.db = db = await asyncio.to_thread(open_database, config.database_url)
        try:
            self.ingest = Ingest(db, config.file.centre.district, clock=self.clock)
            load_extensions()
            settings = link_settings(config)
            subs = subscriptions(config)
            self.link = MqttLink(
                "centre", settings, subs, self._on_message, commit=self._commit, on_connect=self._connected
            )
            log.info("centre: broker %s, %d subscriptions (%s)", self.link.address, len(subs), subs[0][0])
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._write_batches(), name="writer")
                tasks.create_task(self.link.run(), name="mqtt")
                tasks.create_task(self._pruner(), name="pruner")
                tasks.create_task(self._report(), name="stats")
                for name, coro in self._optional_tasks(db):
                    tasks.create_task(coro, name=name)
                self.ready.set()
        finally:
            self._writer.shutdown(wait=True)
            db.close()
            log.info("centre stopped")

    def _optional_tasks(self, db: Database) -> list[tuple[str, Coroutine[Any, Any, None]]]:
        """The console and the rollout driver, when installed (other modules of the centre,
        written separately: the service works without them)."""
        found: list[tuple[str, Coroutine[Any, Any, None]]] = []
        try:
            from centre.console import serve_console  # type: ignore[attr-defined,unused-ignore]
        except ModuleNotFoundError as exc:
            _raise_unless_absent(exc, "centre.console")
            log.info("centre: no console module; running without the console")
        else:
            url = self.config.file.console.public_url or f"http://{self.config.file.console.listen}"
            log.info("centre: console at %s", url)
            print(f"centre console: {url}", flush=True)
            found.append(("console", serve_console(self.config, db, self.publish)))
        try:
            from centre.rollout_driver import drive_rollouts  # type: ignore[import-not-found,unused-ignore]
        except ModuleNotFoundError as exc:
            _raise_unless_absent(exc, "centre.rollout_driver")
            log.info("centre: no rollout driver module; running without rollouts")
        else:
            found.append(("rollouts", drive_rollouts(self.config, db, self.publish, self.clock)))
        return found

    async def _report(self) -> None:
        """One line a minute: what was taken since the start."""
        assert self.ingest is not None and self.link is not None
        while True:
            await asyncio.sleep(STATS_EVERY_S)
            stats = self.ingest.stats
            log.info(
                "ingest: %d taken, %d duplicates, %d rejected, %d batches committed, %d failed; link %s",
                stats.taken,
                stats.duplicates,
                stats.rejected,
                self.commits,
                self.commit_failures,
                "up" if self.link.connected else "down",
            )

    async def _pruner(self) -> None:
        assert self.db is not None
        raw_days = self.config.file.retention.raw_days
        while True:
            try:
                telemetry, seen = await self.write(prune, self.db, raw_days, self.clock())
            except Exception:
                log.exception("retention: pruning failed; trying again later")
            else:
                if telemetry or seen:
                    log.info("retention: deleted %d raw telemetry rows and %d message ids", telemetry, seen)
            await asyncio.sleep(PRUNE_EVERY_S)


def _raise_unless_absent(exc: ModuleNotFoundError, module: str) -> None:
    """An optional part that is not installed is fine; one that is there but cannot be
    imported (a module IT needs is missing) is an error worth its traceback."""
    if exc.name != module:
        raise exc


def _safe_url(url: str) -> str:
    """The database URL without a password."""
    head, sep, tail = url.partition("@")
    if not sep or "://" not in head:
        return url
    scheme, _, user = head.partition("://")
    return f"{scheme}://{user.split(':', 1)[0]}@{tail}"


async def serve(config: CentreConfig) -> None:
    """Run the centre until SIGTERM / SIGINT."""
    service = CentreService(config)
    main = asyncio.ensure_future(service.run())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, main.cancel)
    try:
        await main
    except asyncio.CancelledError:
        log.info("centre: stopping (signal)")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
