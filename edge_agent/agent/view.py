"""The agent as its HTTP face reads it: the ``GatewayView`` the http package defines.

Owns: ``AgentView``, copies of the running gateway's state into the read model's plain values
(links, outbox, alerts, lamps, devices, traces, counters). Every store read the status page
and ``/metrics`` make is here, and only reads (in the agent's own loop, between transactions).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from edge_agent.agent.context import GatewayContext
from edge_agent.histogram import LatencyHistogram
from edge_agent.http.readmodel import (
    Alert,
    BusState,
    Counters,
    Device,
    DongleState,
    Histogram,
    Identity,
    Lamp,
    Links,
    MqttLinkState,
    Outbox,
    OutboxDepth,
    Reached,
    Trace,
)
from edge_agent.policy.messages import reply_code
from edge_agent.store.alerts import OPEN_STATUSES
from edge_agent.store.notifications import Notification

if TYPE_CHECKING:
    from edge_agent.agent.serial_devices import SerialDevices  # pymodbus: imported only when configured


def _histogram(hist: LatencyHistogram) -> Histogram:
    return Histogram(tuple(hist.cumulative()), hist.total)


class AgentView:
    """A ``GatewayView`` on the agent's parts (held by reference: every call reads them now)."""

    def __init__(self, context: GatewayContext, serial: SerialDevices | None) -> None:
        self.context = context
        self.serial = serial

    def identity(self) -> Identity:
        config = self.context.config
        return Identity(config.id, config.file.gateway.timezone, self.context.active.version)

    def now(self) -> float:
        return self.context.clock.now()

    def links(self) -> Links:
        links = self.context.links
        mqtt = tuple(
            MqttLinkState(
                name=name,
                connected=link.connected,
                address=link.address,
                connects=link.connects,
                failures=link.failures,
                last_error=link.last_error or "",
                refused=dict(link.refused),
                unhandled=link.unhandled,
            )
            for name, link in (("south", links.south), ("north", links.north))
            if link is not None
        )
        serial = self.serial
        buses = tuple(
            BusState(
                name=name,
                port=bus.settings.port,
                units=len(bus.settings.units),
                online=sum(bus.online(u) for u in bus.settings.units),
                poll_seconds=_histogram(bus.stats.poll_seconds),
                requests=bus.stats.requests,
                failures=bus.stats.failures,
                retries=bus.stats.retries,
                protocol_errors=dict(bus.stats.protocol_errors),
            )
            for name, bus in (sorted(serial.buses.items()) if serial is not None else [])
        )
        dongle: DongleState | None = None
        if serial is not None and serial.dongle is not None:
            events = dataclasses.asdict(serial.dongle.stats)
            rejected = events.pop("rejected")
            dongle = DongleState(
                port=serial.dongle.settings.port,
                connected=serial.dongle.connected.is_set(),
                reopens=serial.dongle.stats.reopens,
                events=events,
                rejected=rejected,
            )
        return Links(mqtt, buses, dongle)

    def outbox(self) -> Outbox:
        store = self.context.store
        depth = tuple(
            OutboxDepth(link, o.messages, o.payload_bytes, o.oldest_created)
            for link, o in sorted(store.outbox.backlog().items())
        )
        return Outbox(depth, store.outbox.refused())

    def alert_counts(self) -> dict[str, int]:
        return self.context.store.alerts.by_status()

    def recent_alerts(self, limit: int) -> tuple[Alert, ...]:
        alerts = self.context.store.alerts.recent(limit)
        ledger = self.context.store.notifications.of_alerts(a.alert_id for a in alerts if a.status in OPEN_STATUSES)
        messages = self.context.active.engine.policy.messages
        return tuple(
            Alert(
                alert_id=a.alert_id,
                created=a.created,
                device=a.device,
                rule=a.rule,
                priority=a.priority,
                message=a.message,
                step=a.step,
                responder=a.responder,
                status=a.status,
                open=a.status in OPEN_STATUSES,
                replies=(f"{messages.ack} {reply_code(a.alert_id)}", f"{messages.resolve} {reply_code(a.alert_id)}"),
                reached=tuple(_reached(row) for row in ledger.get(a.alert_id, ())),
            )
            for a in alerts
        )

    def lamps(self) -> tuple[Lamp, ...]:
        now = self.context.clock.now()
        return tuple(
            Lamp(lamp.lamp, lamp.group, lamp.level, lamp.override_level >= 0 or lamp.boost_until > now)
            for lamp in self.context.active.engine.lighting.lamps.values()
        )

    def devices(self) -> tuple[Device, ...]:
        last_seen = self.context.stats.last_seen
        devices = []
        for device, (kind, group, zone) in sorted(self.context.site.devices.items()):
            seen = last_seen.get(device)
            ts, event = seen if seen is not None else (None, None)
            devices.append(Device(device, kind, group, zone, ts, event))
        return tuple(devices)

    def traces(self, limit: int) -> tuple[Trace, ...]:
        return tuple(
            Trace(
                ts=t["ts"],
                rule=t["rule"],
                trigger=t["trigger"].get("type", "") if isinstance(t["trigger"], dict) else str(t["trigger"]),
                actions=tuple(t["actions"]),
                duration_us=t.get("duration_us", 0),
            )
            for t in self.context.store.rule_traces.recent(limit=limit)
        )

    def counters(self) -> Counters:
        stats = self.context.stats
        return Counters(
            received_by_class=dict(stats.received_by_class),
            sent_by_class=dict(stats.sent_by_class),
            rejected=dict(stats.rejected),
            duplicates=stats.duplicates,
            effects=stats.effects,
            alarms=dict(stats.alarms),
            refused=dict(stats.refused),
            alerts_raised=stats.alerts_raised,
            alert_changes=dict(stats.alert_changes),
            notifications=stats.notifications,
            notifications_by_state=self.context.store.notifications.by_channel_state(),
            notify_failed=dict(stats.notify_failed),
            sms_replies=dict(stats.sms_replies),
            seq_gaps=dict(stats.seq_gaps),
            broker_dropped=stats.broker_dropped,
            rule_seconds=_histogram(stats.rule_seconds),
            fsyncs=self.context.store.sync_stats()["fsyncs"],
        )


def _reached(row: Notification) -> Reached:
    at = {"delivered": row.delivered, "failed": row.failed, "handed": row.handed}.get(row.state)
    return Reached(row.n, row.responder, row.channel, row.state, row.reason or "", at if at is not None else row.due)
