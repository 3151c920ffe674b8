"""Prometheus metrics of a running agent, read through its ``GatewayView`` at scrape time.

Owns: one custom collector (``GatewayCollector``) that turns the gateway's counters (the
agent's, the links', the buses', the dongle's) and a few store summaries into metric families
when ``/metrics`` is scraped. Nothing is counted twice: the flows keep counting what they always
counted; this module only reads. Label values are bounded (topic classes, links, reasons,
statuses, buses, lamp groups): never a device id.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from edge_agent.http.readmodel import GatewayView, Histogram, OutboxDepth

NS = "edge_agent"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _counter(name: str, doc: str, labels: list[str], values: Iterable[tuple[list[str], float]]) -> Metric:
    family = CounterMetricFamily(f"{NS}_{name}", doc, labels=labels)
    for label_values, value in values:
        family.add_metric(label_values, value)
    return family


def _gauge(name: str, doc: str, labels: list[str], values: Iterable[tuple[list[str], float]]) -> Metric:
    family = GaugeMetricFamily(f"{NS}_{name}", doc, labels=labels)
    for label_values, value in values:
        family.add_metric(label_values, value)
    return family


def _histogram(name: str, doc: str, labels: list[str], values: Iterable[tuple[list[str], Histogram]]) -> Metric:
    family = HistogramMetricFamily(f"{NS}_{name}", doc, labels=labels)
    for label_values, hist in values:
        family.add_metric(label_values, list(hist.buckets), hist.total)
    return family


def _age(entry: OutboxDepth | None, now: float) -> float:
    if entry is None or entry.oldest_created is None:
        return 0.0
    return max(0.0, now - entry.oldest_created)


class GatewayCollector(Collector):
    def __init__(self, view: GatewayView) -> None:
        self.view = view

    def describe(self) -> list[Metric]:
        return []  # no collection at registration: the agent may not be running yet

    def collect(self) -> Iterator[Metric]:
        view = self.view
        stats = view.counters()
        identity = view.identity()
        yield _gauge("policy_version", "Version of the policy the engine runs.", [], [([], identity.policy_version)])
        # ----- messages
        yield _counter(
            "messages_received",
            "Inbound MQTT messages, by topic class (docs/TOPICS.md).",
            ["topic_class"],
            (([c], n) for c, n in sorted(stats.received_by_class.items())),
        )
        yield _counter(
            "messages_sent",
            "Publishes a broker acknowledged, by link and topic class.",
            ["link", "topic_class"],
            (([link, c], n) for (link, c), n in sorted(stats.sent_by_class.items())),
        )
        yield _counter(
            "messages_rejected",
            "Inbound messages rejected, by reason.",
            ["reason"],
            (([r], n) for r, n in sorted(stats.rejected.items())),
        )
        yield _counter("duplicates", "Redelivered device messages dropped.", [], [([], stats.duplicates)])
        yield _counter("effects", "Effects the engine decided.", [], [([], stats.effects)])
        yield _counter(
            "alarms", "Local alarms raised, by reason.", ["reason"], (([r], n) for r, n in sorted(stats.alarms.items()))
        )
        yield _counter(
            "device_seq_gaps",
            "Device events that never arrived, by the gaps in their seq numbers, by device kind.",
            ["kind"],
            (([k], n) for k, n in sorted(stats.seq_gaps.items())),
        )
        yield _counter(
            "broker_dropped",
            "Messages the south broker dropped ($SYS), seen increasing.",
            [],
            [([], stats.broker_dropped)],
        )
        # ----- outbox
        now = view.now()
        queued = view.outbox()
        outbox = {entry.link: entry for entry in queued.links}
        state = view.links()
        mqtt = [(link.name, link) for link in state.mqtt]
        links = sorted(set(outbox) | {"south"} | ({"north"} if "north" in dict(mqtt) else set()))
        yield _gauge(
            "outbox_messages",
            "Messages waiting in the outbox.",
            ["link"],
            (([link], outbox[link].messages if link in outbox else 0) for link in links),
        )
        yield _gauge(
            "outbox_bytes",
            "Payload bytes waiting in the outbox.",
            ["link"],
            (([link], outbox[link].payload_bytes if link in outbox else 0) for link in links),
        )
        yield _gauge(
            "outbox_oldest_age_seconds",
            "Age of the oldest waiting message (agent clock; 0 when empty).",
            ["link"],
            (([link], _age(outbox.get(link), now)) for link in links),
        )
        yield _gauge(
            "outbox_parked_messages",
            "Outbox messages a broker refused, kept and retried later, by refusal reason.",
            ["reason"],
            (([r], n) for r, n in sorted(queued.parked.items())),
        )
        yield _counter(
            "outbox_refused",
            "Outbox publishes a broker refused (MQTT 5 PUBACK reason code), by link and reason.",
            ["link", "reason"],
            (([*key.split(".", 1)], n) for key, n in sorted(stats.refused.items())),
        )
        # ----- MQTT links
        yield _gauge(
            "mqtt_connected",
            "1 while the link is connected.",
            ["link"],
            (([n], float(link.connected)) for n, link in mqtt),
        )
        yield _counter("mqtt_connects", "Successful connects.", ["link"], (([n], link.connects) for n, link in mqtt))
        yield _counter(
            "mqtt_connect_failures", "Failed connects.", ["link"], (([n], link.failures) for n, link in mqtt)
        )
        yield _counter(
            "mqtt_refused",
            "What a broker refused at the link (publishes, the birth, subscriptions), by reason.",
            ["link", "reason"],
            (([n, r], c) for n, link in mqtt for r, c in sorted(link.refused.items())),
        )
        yield _counter(
            "mqtt_unhandled",
            "Inbound QoS 1 messages the agent could not handle (delivered again).",
            ["link"],
            (([n], link.unhandled) for n, link in mqtt),
        )
        # ----- alerts
        yield _counter("alerts_raised", "Alerts raised.", [], [([], stats.alerts_raised)])
        yield _counter(
            "alert_changes",
            "Alert state changes, by the new status.",
            ["status"],
            (([s], n) for s, n in sorted(stats.alert_changes.items())),
        )
        yield _counter(
            "escalations",
            "Alerts escalated to the next responder.",
            [],
            [([], stats.alert_changes.get("escalated", 0))],
        )
        yield _counter("responder_notifications", "Alert messages sent to responders.", [], [([], stats.notifications)])
        yield _gauge(
            "responder_notifications_by_state",
            "Notification ledger rows by channel and how far they got (waiting, queued, handed, delivered, "
            "failed, cancelled).",
            ["channel", "state"],
            (([c, s], n) for (c, s), n in sorted(stats.notifications_by_state.items())),
        )
        yield _counter(
            "responder_channel_failures",
            "Messages a notification channel could not take or send, by link (modem, ring, push).",
            ["link"],
            (([k], n) for k, n in sorted(stats.notify_failed.items())),
        )
        yield _counter(
            "responder_sms_replies",
            "Reply SMS that acknowledged or resolved an alert, by action (refused ones: messages_rejected).",
            ["action"],
            (([a], n) for a, n in sorted(stats.sms_replies.items())),
        )
        yield _gauge(
            "alerts",
            "Alerts in the store, by status.",
            ["status"],
            (([s], n) for s, n in sorted(view.alert_counts().items())),
        )
        # ----- engine
        yield _histogram(
            "rule_run_duration_seconds", "Rule runs (condition and actions).", [], [([], stats.rule_seconds)]
        )
        groups: dict[str, list[float]] = {}
        for lamp in view.lamps():
            groups.setdefault(lamp.group, []).append(lamp.level if lamp.level is not None else 0.0)
        yield _gauge(
            "lamp_group_level_percent",
            "Mean decided lamp level per group.",
            ["group"],
            (([g], sum(levels) / len(levels)) for g, levels in sorted(groups.items())),
        )
        # ----- serial devices
        buses = state.buses
        yield _histogram(
            "modbus_poll_duration_seconds",
            "Answered Modbus polls, request to reading (retries included).",
            ["bus"],
            (([bus.name], bus.poll_seconds) for bus in buses),
        )
        yield _counter("modbus_requests", "Modbus requests sent.", ["bus"], (([b.name], b.requests) for b in buses))
        yield _counter(
            "modbus_failures", "Modbus jobs failed after retries.", ["bus"], (([b.name], b.failures) for b in buses)
        )
        yield _counter("modbus_retries", "Modbus retries.", ["bus"], (([b.name], b.retries) for b in buses))
        yield _counter(
            "modbus_protocol_errors",
            "Malformed or exception Modbus answers, by reason.",
            ["bus", "reason"],
            (([b.name, r], c) for b in buses for r, c in sorted(b.protocol_errors.items())),
        )
        yield _gauge(
            "modbus_nodes_online", "Lamp nodes answering on the bus.", ["bus"], (([b.name], b.online) for b in buses)
        )
        dongle = state.dongle
        if dongle is not None:
            yield _gauge("dongle_connected", "1 while the dongle's port is open.", [], [([], float(dongle.connected))])
            yield _counter(
                "dongle_link_events",
                "Dongle link counters (frames, delivered, duplicates, acks, hellos, boots, reopens, ...).",
                ["event"],
                (([k], v) for k, v in sorted(dongle.events.items())),
            )
            yield _counter(
                "dongle_frames_rejected",
                "Dongle frames rejected, by reason.",
                ["reason"],
                (([r], n) for r, n in sorted(dongle.rejected.items())),
            )
        # ----- store
        yield _counter("store_fsyncs", "WAL fsyncs.", [], [([], stats.fsyncs)])


def build_registry(view: GatewayView) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(view))
    ProcessCollector(registry=registry)  # process_resident_memory_bytes, cpu, open fds
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
