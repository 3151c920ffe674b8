"""The serial side of /metrics: Modbus poll latency histogram and failures per bus, dongle counters.

The bus scheduler and the dongle link keep their own counters (tests/test_modbus_bus.py and
tests/test_dongle_link.py drive them on ptys); here the agent's view reads those objects and
the collector must turn them into the right families, per bus, with cumulative buckets.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from prometheus_client.parser import text_string_to_metric_families

from edge_agent.agent.app import Agent
from edge_agent.agent.view import AgentView
from edge_agent.histogram import BUS_BUCKETS_S, LatencyHistogram
from edge_agent.http.metrics import build_registry, exposition
from edge_agent.transports.dongle_link import DongleLink, DongleSettings
from edge_agent.transports.modbus_bus import BusSettings, ModbusLampBus
from tests.http.helpers import http_gateway


def test_bus_and_dongle_counters_become_metric_families(tmp_path: Path, unique_id: str) -> None:
    agent = Agent(http_gateway(tmp_path, unique_id, 1883))
    try:
        street = ModbusLampBus(BusSettings(port="/dev/null", units=(1, 2, 3)))
        for seconds in (0.004, 0.02, 0.02, 0.3):
            street.stats.poll_seconds.observe(seconds)
        street.stats.requests, street.stats.failures, street.stats.retries = 12, 2, 5
        street.stats.protocol_errors["bad_crc"] = 1
        dongle = DongleLink(DongleSettings(port="/dev/null"))
        dongle.stats.frames, dongle.stats.duplicates = 7, 2
        dongle.stats.rejected["crc"] = 3
        serial = SimpleNamespace(buses={"street": street}, dongle=dongle)
        view = AgentView(agent.context, serial)  # type: ignore[arg-type]

        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(exposition(build_registry(view)).decode())
            for s in family.samples
        }
    finally:
        agent.store.close()
        agent.delivery.close()

    bus = (("bus", "street"),)
    assert samples[("edge_agent_modbus_poll_duration_seconds_count", bus)] == 4
    assert samples[("edge_agent_modbus_poll_duration_seconds_bucket", (*bus, ("le", "0.005")))] == 1
    assert samples[("edge_agent_modbus_poll_duration_seconds_bucket", (*bus, ("le", "0.025")))] == 3
    assert samples[("edge_agent_modbus_poll_duration_seconds_bucket", (*bus, ("le", "+Inf")))] == 4
    assert abs(samples[("edge_agent_modbus_poll_duration_seconds_sum", bus)] - 0.344) < 1e-9
    assert samples[("edge_agent_modbus_requests_total", bus)] == 12
    assert samples[("edge_agent_modbus_failures_total", bus)] == 2
    assert samples[("edge_agent_modbus_retries_total", bus)] == 5
    assert samples[("edge_agent_modbus_protocol_errors_total", (*bus, ("reason", "bad_crc")))] == 1
    assert samples[("edge_agent_modbus_nodes_online", bus)] == sum(street.online(u) for u in (1, 2, 3))
    assert samples[("edge_agent_dongle_connected", ())] == 0
    assert samples[("edge_agent_dongle_link_events_total", (("event", "frames"),))] == 7
    assert samples[("edge_agent_dongle_link_events_total", (("event", "duplicates"),))] == 2
    assert samples[("edge_agent_dongle_frames_rejected_total", (("reason", "crc"),))] == 3


def test_histogram_buckets_follow_prometheus_le() -> None:
    hist = LatencyHistogram(BUS_BUCKETS_S)
    hist.observe(0.005)  # on a bound: counted in that bucket (le = less or equal)
    hist.observe(10.0)
    cumulative = dict(hist.cumulative())
    assert cumulative["0.005"] == 1 and cumulative["2.5"] == 1 and cumulative["+Inf"] == 2
