"""The HTTP face on its own seam: the status page and /metrics from a ``GatewayView`` made of
plain values, with no agent, store or broker behind it; and the package imports nothing of the
agent (the read model is the only way in)."""

from __future__ import annotations

import ast
import time
from pathlib import Path

import msgspec
from prometheus_client.parser import text_string_to_metric_families

from edge_agent.http.metrics import build_registry, exposition
from edge_agent.http.readmodel import (
    Alert,
    BusState,
    Counters,
    Device,
    DongleState,
    GatewayView,
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
from edge_agent.http.status import render_page, snapshot
from tests.agent.harness import T0

HTTP = Path(__file__).resolve().parents[2] / "edge_agent" / "http"
NO_TIME = Histogram((("0.001", 0.0), ("+Inf", 0.0)), 0.0)


class FixedView:
    """A gateway at one moment: a south link up, a bus with two of three nodes, an open SOS."""

    def identity(self) -> Identity:
        return Identity("naxi-v09", "Asia/Shanghai", 3)

    def now(self) -> float:
        return T0

    def links(self) -> Links:
        south = MqttLinkState("south", True, "127.0.0.1:1883", 2, 1, "", {"quota": 4}, 0)
        bus = BusState("street", "/dev/ttyUSB0", 3, 2, Histogram((("0.01", 5.0), ("+Inf", 6.0)), 0.09), 40, 1, 2, {})
        dongle = DongleState("/dev/ttyACM0", True, 1, {"frames": 9, "reopens": 1}, {"crc": 2})
        return Links((south,), (bus,), dongle)

    def outbox(self) -> Outbox:
        return Outbox((OutboxDepth("south", 2, 300, T0 - 90),), {"quota": 1})

    def alert_counts(self) -> dict[str, int]:
        return {"notified": 1, "resolved": 4}

    def recent_alerts(self, limit: int) -> tuple[Alert, ...]:
        reached = (
            Reached(1, "doc1", "app", "handed", "", T0 - 59),
            Reached(1, "doc1", "sms", "failed", "no credit <SIM>", T0 - 50),
            Reached(1, "doc1", "ring", "waiting", "", T0),
        )
        sos = Alert(
            "a1",
            T0 - 60,
            "W1",
            "sos",
            1,
            "SOS from W1 <lane>",
            0,
            "doc1",
            "notified",
            True,
            ("1 K7QD", "2 K7QD"),
            reached,
        )
        return (sos,)[:limit]

    def lamps(self) -> tuple[Lamp, ...]:
        return (Lamp("L1", "village", 80.0, False), Lamp("L2", "village", None, True))

    def devices(self) -> tuple[Device, ...]:
        return (
            Device("L1", "lamp", "village", "square", T0 - 30, "state"),
            Device("W1", "wearable", None, "lane", T0 - 60, "sos"),
            Device("C1", "camera", None, "square", None, None),
        )

    def traces(self, limit: int) -> tuple[Trace, ...]:
        return (Trace(T0 - 60, "sos", "event", ("alert", "notify"), 41),)[:limit]

    def counters(self) -> Counters:
        return Counters(
            received_by_class={"wearable_event": 1},
            sent_by_class={("south", "responder_alert"): 1},
            rejected={},
            duplicates=0,
            effects=2,
            alarms={},
            refused={"south.quota": 4},
            alerts_raised=1,
            alert_changes={"notified": 1},
            notifications=1,
            rule_seconds=NO_TIME,
            fsyncs=7,
            notifications_by_state={("sms", "handed"): 3, ("sms", "failed"): 1},
            notify_failed={"modem": 1},
            sms_replies={"ack": 2},
        )


def test_the_status_page_renders_from_the_view_alone() -> None:
    view: GatewayView = FixedView()
    snap = snapshot(view, time.monotonic())
    assert [link["name"] for link in snap["links"]] == ["south", "bus street", "dongle"]
    assert snap["links"][1]["detail"] == "/dev/ttyUSB0: 2/3 nodes answer"
    assert snap["outbox"] == {"south": {"messages": 2, "bytes": 300, "oldest_age_s": 90.0}}
    assert snap["alerts"][0]["open"] and snap["alerts"][0]["responder"] == "doc1"
    assert [d["state"] for d in snap["devices"]] == ["reporting, decided 80%", "sos", "never seen"]
    assert snap["groups"] == [{"group": "village", "lamps": 2, "levels": "1× -, 1× 80%", "overrides": 1}]
    msgspec.json.encode(snap)  # /status.json
    page = render_page(snap)
    assert "SOS from W1 &lt;lane&gt;" in page and "<lane>" not in page  # escaped once, here
    # who was reached how, and the reply that takes it, for the person on duty
    assert "doc1 sms failed (no credit &lt;SIM&gt;)" in page and "doc1 ring waiting" in page
    assert "<b>1 K7QD</b> to take it" in page


def test_metrics_come_from_the_view_alone() -> None:
    text = exposition(build_registry(FixedView())).decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("edge_agent_policy_version", ())] == 3
    assert samples[("edge_agent_outbox_messages", (("link", "south"),))] == 2
    assert ("edge_agent_outbox_messages", (("link", "north"),)) not in samples  # no uplink, no north row
    assert samples[("edge_agent_outbox_oldest_age_seconds", (("link", "south"),))] == 90
    assert samples[("edge_agent_outbox_parked_messages", (("reason", "quota"),))] == 1
    assert samples[("edge_agent_mqtt_refused_total", (("link", "south"), ("reason", "quota")))] == 4
    assert samples[("edge_agent_alerts", (("status", "notified"),))] == 1
    assert samples[("edge_agent_escalations_total", ())] == 0
    assert samples[("edge_agent_lamp_group_level_percent", (("group", "village"),))] == 40
    assert samples[("edge_agent_modbus_nodes_online", (("bus", "street"),))] == 2
    assert samples[("edge_agent_modbus_poll_duration_seconds_count", (("bus", "street"),))] == 6
    assert samples[("edge_agent_dongle_frames_rejected_total", (("reason", "crc"),))] == 2
    assert samples[("edge_agent_store_fsyncs_total", ())] == 7
    by_state = "edge_agent_responder_notifications_by_state"
    assert samples[(by_state, (("channel", "sms"), ("state", "handed")))] == 3
    assert samples[(by_state, (("channel", "sms"), ("state", "failed")))] == 1
    assert samples[("edge_agent_responder_channel_failures_total", (("link", "modem"),))] == 1
    assert samples[("edge_agent_responder_sms_replies_total", (("action", "ack"),))] == 2


def test_the_http_package_imports_nothing_of_the_agent() -> None:
    for path in sorted(HTTP.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module is not None:
                names = [node.module]
            assert not [n for n in names if n == "edge_agent.agent" or n.startswith("edge_agent.agent.")], path.name
