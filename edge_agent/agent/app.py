"""The gateway agent: the composition root. Config -> transports -> engine -> store.

Owns: building the parts and wiring them together, and nothing else. The flows live in their
own modules, each handed the objects it needs:

- ``intake``: inbound messages and device events, up to their commit and acknowledgement;
- ``outbound``: effects into outbox rows and lamp commands, the outbox drains, the alarm;
- ``lamps``: lamp commands, resync, programs and the policy rollout;
- ``policy_install``: a received policy bundle installed (the engine swapped) and acked;
- ``loops``: timers and the lighting minute, the periodic flush;
- ``topics``: every topic string; ``runtime``, ``alarm``: the small objects the flows share,
  handed to each flow as one ``context.GatewayContext``;
- ``view``: the read model the HTTP face (``edge_agent.http``) reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import signal
import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from edge_agent.agent import sdnotify, topics
from edge_agent.agent.alarm import Alarm
from edge_agent.agent.context import GatewayContext
from edge_agent.agent.deliveries import Deliveries
from edge_agent.agent.field_history import watch_uplink
from edge_agent.agent.foreign import ForeignTopics
from edge_agent.agent.history_north import HistoryNorth
from edge_agent.agent.homeassistant import HomeAssistant
from edge_agent.agent.intake import Intake
from edge_agent.agent.lamps import Lamps
from edge_agent.agent.links import MqttLinks, parse_url
from edge_agent.agent.loops import STORE_RETRY_S, Flusher, run_timers
from edge_agent.agent.operator_acks import OperatorAcks
from edge_agent.agent.outbound import Outbound
from edge_agent.agent.policy_delivery import PolicyDelivery
from edge_agent.agent.policy_install import PolicyInstaller
from edge_agent.agent.push_acks import PushAcks
from edge_agent.agent.replies import Replies
from edge_agent.agent.rollout import RolloutTracker
from edge_agent.agent.runtime import ActivePolicy, AgentStats, Background, Links, Unflushed, topic_class
from edge_agent.agent.shadow import Shadow, start_shadow
from edge_agent.agent.view import AgentView
from edge_agent.clock import Clock, ScaledClock
from edge_agent.config import GatewayConfig, public_url
from edge_agent.config.gammu import read_smsdrc
from edge_agent.engine import Effect, Engine, Site
from edge_agent.engine.site import SiteLamp, SiteResponder
from edge_agent.models import Event
from edge_agent.notify.gammu import ModemLink
from edge_agent.notify.push import PushLink, read_push_urls
from edge_agent.notify.ring import RingLink
from edge_agent.policy.dispatch_state import parse_shift
from edge_agent.policy.model import Policy
from edge_agent.store.db import Store
from edge_agent.transports.broker import EmbeddedBroker
from edge_agent.transports.link import Handled, LinkFactory, LinkSpec, MessageHandler, ServedLink

if TYPE_CHECKING:
    from edge_agent.agent.serial_devices import SerialDevices
    from edge_agent.http.server import HttpServer

__all__ = ["Agent", "AgentStats", "run_agent", "site_from_config"]

log = logging.getLogger("edge_agent")


def site_from_config(config: GatewayConfig) -> Site:
    gw = config.file
    devices: dict[str, tuple[str, str | None, str | None]] = {}
    for lamp in gw.lamps:
        devices[lamp.id] = ("lamp", lamp.group, lamp.zone)
    for camera in gw.cameras:
        devices[camera.id] = ("camera", None, camera.zone)
    for wearable in gw.wearables:
        devices[wearable.id] = ("wearable", None, wearable.zone)
    return Site(
        gateway=config.id,
        latitude=gw.gateway.latitude,
        longitude=gw.gateway.longitude,
        tz=config.tz,
        lamps=tuple(SiteLamp(lamp.id, lamp.group, lamp.zone) for lamp in gw.lamps),
        responders=tuple(SiteResponder(r.id, r.role, r.x, r.y, parse_shift(r.shift)) for r in gw.responders),
        locations={w.id: (w.home.x, w.home.y) for w in gw.wearables if w.home is not None},
        devices=devices,
        traces_per_rule=gw.limits.traces_per_rule,
    )


class Agent:
    """One gateway. ``await agent.run()`` until cancelled; ``agent.ready`` is set once serving."""

    def __init__(
        self,
        config: GatewayConfig,
        clock: Clock | None = None,
        *,
        south_url: str | None = None,
        north_url: str | None = None,
        http_listen: str | None = None,
        links: LinkFactory | None = None,
    ) -> None:
        """``http_listen``: serve /metrics and the status page there ("127.0.0.1:0": a free
        port, read back from ``agent.http.port``) whatever ``[http]`` says. ``links``: what
        makes the south and north links (default: MQTT to the configured brokers, ``MqttLinks``;
        tests pass an in-process bus's, edge_agent/transports/inprocess.py)."""
        self.config = config
        self.clock: Clock = clock or ScaledClock()
        self.stats = AgentStats()
        self.ready = asyncio.Event()
        # set once the engine has started: the links connect before (so an alarm can leave
        # while the store refuses writes) but take in nothing until then
        self.engine_started = asyncio.Event()
        self._south_url = south_url or config.file.south.url
        self._north_url = north_url or config.file.north.url
        self._http_listen = http_listen
        self._link_factory = links
        self.http: HttpServer | None = None  # the status page and /metrics, while serving
        limits = config.file.limits
        db_path = config.data_dir / "gateway.sqlite3"
        self.store = Store(db_path, quota_bytes=int(limits.outbox_max_mb * 2**20))
        self.delivery = PolicyDelivery(config, db_path)
        policy, version = self.delivery.startup_policy()
        self.site = site_from_config(config)
        # the field history twin/calibrate fits a scenario to (alert, event, motion, link logs)
        self.store.history.create()  # its census is written at start (_start_engine)
        self.active = ActivePolicy(Engine(policy, self.site, self.store), version)
        self.links = Links()
        self.broker: EmbeddedBroker | None = None
        self.serial: SerialDevices | None = None
        if config.file.buses or config.file.dongle is not None:
            # imported only when needed: pymodbus alone costs a gateway ~13 MB of memory
            from edge_agent.agent.serial_devices import SerialDevices

            self.serial = SerialDevices(
                config,
                self.clock,
                self.commit_event,
                dongle_boot=lambda: self.store.meta.get("dongle.boot") or "",
                save_dongle_boot=self._save_dongle_boot,
            )
        # rollout: the policy version each lamp last reported, and when we last pushed it
        self.rollout = RolloutTracker((lamp.id for lamp in config.file.lamps), version)
        background = Background()
        self.context = context = GatewayContext(
            config=config,
            site=self.site,
            clock=self.clock,
            store=self.store,
            active=self.active,
            links=self.links,
            stats=self.stats,
            background=background,
            alarm=Alarm(config.id, self.clock, self.links, self.stats, background),
            timers_changed=asyncio.Event(),
            unflushed=Unflushed(),
        )
        self.lamps = Lamps(context, self.serial, self.rollout)
        self.outbound = Outbound(context, self.lamps)
        self.history_north = HistoryNorth(context, self.outbound._enqueue_north)  # history + health, uplink only
        self.policies = PolicyInstaller(context, delivery=self.delivery, outbound=self.outbound, lamps=self.lamps)
        self.homeassistant: HomeAssistant | None = None  # [homeassistant] enabled: discovery, states, commands
        if config.file.homeassistant.enabled:
            self.homeassistant = HomeAssistant(context, self.outbound)
        # [shadow]: a candidate policy decides beside the active one, on its own store, acting on nothing
        self.shadow: Shadow | None = None
        if config.shadow_policy is not None:
            self.shadow = start_shadow(config, self.site, self.clock, self.active, self.links, self.store)
        # [[foreign_topics]]: devices with their own topic schemas, as engine events
        self.foreign = ForeignTopics(config.file.foreign_topics, self.site.devices)
        self.intake = Intake(
            context,
            outbound=self.outbound,
            rollout=self.rollout,
            on_policy=self.policies.receive,
            homeassistant=self.homeassistant,
            shadow=self.shadow,
            foreign=self.foreign,
        )
        self.operator_acks = OperatorAcks(context, self.intake.receive_south)  # the centre's console
        self.flusher = Flusher(context)
        self.view = AgentView(context, self.serial)  # what the HTTP face reads
        # the responder channels (edge_agent/notify): SMS and rings through the modem, pushes
        # through Apprise with a link back to the HTTP face that acknowledges
        self.push_acks = PushAcks(
            context,
            self.intake,
            lambda: (
                public_url(config.file.http, f"{self.http.host}:{self.http.port}") if self.http is not None else None
            ),
        )
        self.modem: ModemLink | None = None
        self.replies: Replies | None = None
        channels = self.outbound.channels
        if config.file.modem is not None:
            modem = config.file.modem
            self.modem = ModemLink(read_smsdrc((config.path.parent / modem.smsdrc).resolve()), modem.inject)
            self.links.notify["modem"] = self.modem
            self.replies = Replies(context, self.intake, self.modem, modem.poll, channels)
            if modem.ring_port is not None:
                ring = RingLink(modem.ring_port, baudrate=modem.ring_baudrate, ring_seconds=modem.ring_seconds)
                self.links.notify["ring"] = ring
        push_urls = read_push_urls(config.file, config.path)
        if push_urls:
            self.links.notify["push"] = PushLink(push_urls)
            channels.push_targets = set(push_urls)
            channels.push_payload = self.push_acks.payload
        self.deliveries = Deliveries(context, self.intake, self.outbound.channels)

    # ----- lifecycle ------------------------------------------------------------------------
    async def run(self) -> None:
        try:
            async with contextlib.AsyncExitStack() as stack:
                links = self._link_factory or MqttLinks(self.config, self._south_url, self._north_url)
                make_link = await stack.enter_async_context(links.open())
                if isinstance(links, MqttLinks):
                    self.broker = links.broker
                uplink = self._north_url not in ("none", "")
                gw, file = self.config.id, self.config.file
                south = self.links.south = make_link(
                    LinkSpec(
                        "south",
                        topics.subscriptions(gw, "south", uplink=uplink)
                        + (self.homeassistant.subscriptions() if self.homeassistant is not None else [])
                        + self.foreign.subscriptions("south")
                        + [(topics.BROKER_DROPPED, 0)],  # Mosquitto's own count (edge_agent/agent/drops.py)
                        self._after_start(self.operator_acks.wrap(self.intake.receive_south)),  # without an uplink
                        commit=self.intake.commit,
                        on_connect=self._south_connected,
                        on_published=self._count_sent("south"),
                    )
                )
                north: ServedLink | None = None
                if uplink:
                    north = self.links.north = make_link(
                        LinkSpec(
                            "north",
                            topics.subscriptions(gw, "north", uplink=True) + self.foreign.subscriptions("north"),
                            self._after_start(self.operator_acks.wrap(self.intake.receive_north)),
                            commit=self.intake.commit,
                            on_published=self._count_sent("north"),
                        )
                    )
                if file.http.enabled or self._http_listen is not None:
                    from edge_agent.http.server import serve_http  # prometheus_client, h11: only when served

                    self.http = await stack.enter_async_context(
                        serve_http(self.view, file.http, self.config.path, self._http_listen, self.push_acks)
                    )
                async with asyncio.TaskGroup() as group:

                    def writing(what: str, loop: Callable[..., Awaitable[None]], *args: Any) -> None:
                        group.create_task(self._writing(what, functools.partial(loop, *args)))

                    group.create_task(south.run())
                    writing("the south outbox", self.outbound.drain, "south", south)
                    if north is not None:
                        group.create_task(north.run())
                        writing("the north outbox", self.outbound.drain, "north", north)
                    await self._start_engine()
                    self.engine_started.set()
                    if south.connected:
                        self._south_connected()  # (it connected before the engine started)
                    # what start-up built lives as long as the process: out of the collector's
                    # sight, so a full collection walks only what the traffic allocates (no
                    # multi-millisecond pause in the middle of an alert)
                    gc.freeze()
                    if north is not None:
                        writing("the uplink log", watch_uplink, self.store, self.clock, north)
                        writing("the history north", self.history_north.run, north)
                    group.create_task(run_timers(self.context, self.outbound.apply, shadow=self.shadow))
                    group.create_task(self.flusher.run())
                    writing("the lamp rollout", self.lamps.run_rollout)
                    if self.shadow is not None:
                        writing("the shadow policy", self.shadow.run)
                    if self.serial is not None and self.serial.active:
                        group.create_task(self.serial.run())
                    for name, notify_link in self.links.notify.items():
                        writing(f"the {name} outbox", self.deliveries.drain, name, notify_link)
                    writing("the notification steps", self.deliveries.run)
                    if self.replies is not None:
                        writing("the SMS replies", self.replies.run)
                    await south.wait_connected(timeout=30)
                    self.ready.set()
                    sdnotify.notify("READY=1", f"STATUS={self._service_status()}")
                    group.create_task(sdnotify.watchdog(self._service_status))
        finally:
            sdnotify.notify("STOPPING=1")
            self.flusher.flush()
            self.store.close()
            if self.shadow is not None:
                self.shadow.close()
            self.delivery.close()

    async def _writing(self, what: str, loop: Callable[[], Awaitable[None]]) -> None:
        """Run a loop that writes to the store; when the store refuses a write (another process
        holding its lock, a full disk) sound the alarm and start the loop again a moment later
        instead of ending the agent: each loop keeps its state in the store, so a restart only
        repeats what was not committed (receivers drop duplicates by message id)."""
        while True:
            try:
                await loop()
            except sqlite3.Error as exc:
                self.alarm("storage", f"{what} cannot write to the store: {exc}")
                await asyncio.sleep(STORE_RETRY_S)
            else:
                return

    async def _start_engine(self) -> None:
        """Record the census, restore timers and decide lamp levels; a store that refuses writes
        (another process holding a lock, a full disk) is alarmed and retried, not a crash loop."""
        while True:
            try:
                self.store.history.install(((d, *info) for d, info in self.site.devices.items()), self.clock.now())
                with self.store.transaction():
                    self.outbound.apply(self.engine.start(self.clock.now()))
            except sqlite3.Error as exc:
                self.alarm("storage", f"cannot start: the store refuses writes: {exc}")
                await asyncio.sleep(STORE_RETRY_S)
            else:
                return

    def _count_sent(self, link: str) -> Callable[[str], None]:
        sent, gateway = self.stats.sent_by_class, self.config.id

        def count(topic: str) -> None:
            sent[(link, topic_class(gateway, topic))] += 1

        return count

    def _service_status(self) -> str:
        """systemd's STATUS= line (``systemctl status``)."""
        links = ", ".join(
            f"{name} {'up' if link.connected else 'down'}"
            for name, link in (("south", self.south), ("north", self.north))
            if link is not None
        )
        where = f"; status page {self.http.url}" if self.http is not None else ""
        return f"serving, policy v{self.policy_version}, {links}{where}"

    # ----- the public face: thin delegations for the CLI, the dev tools and tests -----------
    @property
    def engine(self) -> Engine:
        return self.active.engine

    @property
    def policy_version(self) -> int:
        return self.active.version

    @property
    def south(self) -> ServedLink | None:
        return self.links.south

    @property
    def north(self) -> ServedLink | None:
        return self.links.north

    @property
    def south_address(self) -> tuple[str, int]:
        if self.broker is not None:
            return self.broker.host, self.broker.port
        return parse_url(self._south_url)

    @property
    def on_effect(self) -> Callable[[Effect], None] | None:
        return self.outbound.on_effect

    @on_effect.setter
    def on_effect(self, observer: Callable[[Effect], None] | None) -> None:
        self.outbound.on_effect = observer  # observers (demo timeline)

    def _after_start(self, handler: MessageHandler) -> MessageHandler:
        """``handler``, holding what arrives until the engine has started (unacknowledged
        meanwhile: the broker keeps it)."""
        started = self.engine_started

        async def handle(topic: str, payload: bytes) -> Handled:
            if not started.is_set():
                await started.wait()
            return await handler(topic, payload)

        return handle

    def _south_connected(self) -> None:
        if not self.engine_started.is_set():
            return  # called again once it has
        self.lamps.resync()
        if self.homeassistant is not None:
            self.homeassistant.announce()  # retained discovery configs, once per connect

    async def _save_dongle_boot(self, boot: str) -> None:
        with self.store.transaction():
            self.store.meta.set("dongle.boot", boot)
        await self.store.sync()

    def handle_event(self, event: Event) -> bool:
        return self.intake.handle_event(event)

    async def commit_event(self, event: Event) -> None:
        await self.intake.commit_event(event)

    def install_policy(self, policy: Policy, version: int) -> None:
        self.policies.install(policy, version)

    def alarm(self, reason: str, detail: str) -> None:
        self.context.alarm.sound(reason, detail)

    def rollout_status(self) -> dict[str, Any]:
        return self.lamps.rollout_status()


async def run_agent(config: GatewayConfig, clock: Clock | None = None) -> None:
    agent = Agent(config, clock)
    started = time.monotonic()
    log.info("gateway %s starting", config.id)
    # SIGTERM (systemctl stop) ends the agent like Ctrl-C: its shutdown flushes and closes the store
    main = asyncio.current_task()
    terminated = False

    def terminate() -> None:
        nonlocal terminated
        terminated = True
        if main is not None:
            main.cancel()

    with contextlib.suppress(NotImplementedError, RuntimeError):  # not on Windows / off the main thread
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, terminate)
    try:
        await agent.run()
    except asyncio.CancelledError:
        if not terminated:
            raise
        if main is not None:
            main.uncancel()
    finally:
        log.info("gateway %s stopped after %.1fs", config.id, time.monotonic() - started)
