"""`GET /metrics` on a running agent: Prometheus text whose values follow from what happened.

A real agent on a real broker (Mosquitto when installed) gets three SOS, a broken message and
an acknowledgement; one alert goes unanswered long enough to escalate. The scrape, parsed by
prometheus_client's own parser, says exactly that, with no per-device label anywhere.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from edge_agent.clock import ManualClock
from tests.agent.harness import T0, eventually, observing, running
from tests.conftest import BrokerInfo
from tests.http.helpers import aget, http_gateway


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_count_what_the_gateway_did(tmp_path: Path, mqtt_broker: BrokerInfo, unique_id: str) -> None:
    config = http_gateway(tmp_path, unique_id, mqtt_broker.port)
    clock = ManualClock(T0)
    async with (
        observing(mqtt_broker.host, mqtt_broker.port, f"district/v1/{unique_id}") as obs,
        running(config, clock) as agent,
    ):
        assert agent.http is not None
        url = f"http://127.0.0.1:{agent.http.port}/metrics"
        for seq in (1, 2, 3):
            await obs.publish("wearable/W1/event", {"event": "sos", "seq": seq})
        await obs.publish("wearable/W1/vitals", {"battery": 80})
        await obs.publish("wearable/W1/vitals", b"{broken")
        # doc1 gets the first SOS, doc2 (doc1 being asked) the second; the third waits (queued)
        await eventually(lambda: obs.on("responder/doc1/alert") and obs.on("responder/doc2/alert"))
        first = obs.on("responder/doc1/alert")[0]["alert_id"]
        await eventually(lambda: "queued" in [a.status for a in agent.store.alerts.newest()], what="the third queued")
        await clock.advance(1.0)
        await obs.publish("responder/doc1/ack", {"alert_id": first})
        await obs.publish("responder/doc1/resolved", {"alert_id": first})  # doc1 free: takes the third
        await eventually(lambda: len(obs.on("responder/doc1/alert")) == 2, what="the queued alert to doc1")
        await clock.advance(120.0)  # the other two go unanswered: each escalates round the chain
        await eventually(
            lambda: len(obs.on("responder/doc2/alert")) == 2 and len(obs.on("responder/doc1/alert")) == 3,
            what="escalations",
        )

        async def scraped() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
            status, headers, body = await aget(url)
            assert status == 200
            assert headers["content-type"].startswith("text/plain; version=0.0.4")
            samples = parse(body.decode())
            done = (
                value(samples, "edge_agent_messages_sent_total", link="south", topic_class="responder_alert") >= 5
                and value(samples, "edge_agent_messages_sent_total", link="north", topic_class="alert") >= 6
                and value(samples, "edge_agent_rule_run_duration_seconds_count") >= 3
            )
            return samples if done else None

        alert_ids = [a.alert_id for a in agent.store.alerts.newest()]
        samples = None
        for _ in range(100):
            samples = await scraped()
            if samples is not None:
                break
            await asyncio.sleep(0.1)
        assert samples is not None, "the outbox never drained, or the traces were never flushed"

    assert value(samples, "edge_agent_alerts_raised_total") == 3
    assert value(samples, "edge_agent_messages_received_total", topic_class="wearable_event") == 3
    assert value(samples, "edge_agent_messages_received_total", topic_class="wearable_vitals") == 2
    assert value(samples, "edge_agent_messages_received_total", topic_class="responder_ack") == 1
    assert value(samples, "edge_agent_messages_rejected_total", reason="bad_json") == 1
    assert value(samples, "edge_agent_alert_changes_total", status="notified") == 3
    assert value(samples, "edge_agent_alert_changes_total", status="acknowledged") == 1
    assert value(samples, "edge_agent_alert_changes_total", status="queued") == 1
    assert value(samples, "edge_agent_alert_changes_total", status="resolved") == 1
    assert value(samples, "edge_agent_alert_changes_total", status="escalated") == 2
    assert value(samples, "edge_agent_escalations_total") == 2
    assert value(samples, "edge_agent_responder_notifications_total") == 5
    assert value(samples, "edge_agent_alerts", status="resolved") == 1
    assert value(samples, "edge_agent_alerts", status="escalated") == 2
    assert value(samples, "edge_agent_mqtt_connected", link="south") == 1
    assert value(samples, "edge_agent_mqtt_connected", link="north") == 1
    assert value(samples, "edge_agent_policy_version") == agent.policy_version
    assert value(samples, "edge_agent_rule_run_duration_seconds_bucket", le="+Inf") >= 3
    assert value(samples, "edge_agent_outbox_messages", link="south") >= 0
    assert ("edge_agent_outbox_oldest_age_seconds", (("link", "north"),)) in samples
    assert value(samples, "process_resident_memory_bytes") > 10e6
    # bounded cardinality: no label value names a device, a responder or an alert
    names = {"W1", "L1", "L2", "L3", "C1", "doc1", "doc2", *alert_ids}
    assert not [key for key in samples if names & {v for _, v in key[1]}]


async def test_the_http_face_is_read_only_and_answers_404(
    tmp_path: Path, mqtt_broker: BrokerInfo, unique_id: str
) -> None:
    config = http_gateway(tmp_path, unique_id, mqtt_broker.port)
    async with running(config, ManualClock(T0)) as agent:
        assert agent.http is not None
        base = f"http://127.0.0.1:{agent.http.port}"
        status, _, _ = await aget(base + "/nothing")
        assert status == 404
        reader, writer = await asyncio.open_connection("127.0.0.1", agent.http.port)
        writer.write(b"POST /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        head = await reader.readline()
        assert head.startswith(b"HTTP/1.1 405")
        writer.close()
        # a web page elsewhere cannot read a loopback gateway by DNS rebinding: Host is checked
        status, _, _ = await aget(base + "/metrics", {"Host": "evil.example:9180"})
        assert status == 401
