"""`just chaos`: fault injection against a real gateway process and real Mosquitto brokers.

Owns: the chaos suite of issue 6. Every scenario starts its own south (village) and north
(city) Mosquitto on free loopback ports, runs `edge-agent run` as a child process, publishes
as a wearable hub / lamps on the south broker, and plays the city platform on the north
broker with ``edge_agent.receiver.Receiver`` (dedupe by ``msg_id``, per-device ``seq`` gaps).

Scenarios (rows of the table):
  a. kill -9 of the agent at random moments during an SOS stream, restarted at once;
     ``PRAGMA integrity_check`` after every kill and at the end.
  b. the north broker killed (-9) and restarted while alerts flow, without and with broker
     persistence.
  c. the uplink down for an hour of accelerated time at 10 msg/s of timeline traffic
     (lamp telemetry and SOS): no per-device gaps, alerts before the telemetry backlog,
     time to the first alert after reconnection.
  d. a proxy that drops the connection right after a QoS 1 PUBLISH (before the PUBACK).
  e. a serial port vanishing in the middle of an SOS frame (DongleLink over a pty).
  (f-i: ``dongle_kills``, ``command_kills``, ``refusals``.)
  j. kill -9 of the agent during the SMS hand-off to gammu-smsd on its dummy phone
     (``sms_kills``): every alert's SMS sent at least once, at most twice.
  k-n. power cuts instead of kill -9 (``crash.PowerCut``: the agent's data dir on the power-cut
     file system, ``devtools.powercut``): k during an MQTT SOS stream (a's scenario), l during
     a dongle SOS stream (f's), m during responder acks and resolves (g's), n during policy
     installs (``policy_cuts``: the active policy never older than the last acknowledged).

"sent" counts what the south broker acknowledged (PUBACK to our publisher), so "lost" is
exactly "acknowledged by the gateway's side and never seen by the platform". Loopback only;
every phase has a deadline; the run stops by itself. Exit code 1 if anything was lost or a
check failed.

Layout: ``harness`` (agent process, platform, hub, brokers, waits), ``scenario`` (the one
skeleton ``GatewayScenario`` and ``Row``), ``crash`` (how a row crashes the agent: kill -9 or
a power cut), ``faults`` (a to d), ``serial`` (e), ``cli``, ``record`` (the rows in
``bench-results/chaos.json``, from which ``devtools.bench_results`` generates the README's chaos
table). A new row is a job in ``cli.jobs`` under a new letter and a test in ``tests/chaos``
marked ``chaos_row("<letter>")``; its first run adds it to the table.
"""

from devtools.chaos.cli import Plan, main, plan, render, run_all
from devtools.chaos.faults import (
    AgentKills,
    BrokerRestarts,
    PublishDrops,
    UplinkOutage,
    agent_kills,
    broker_restarts,
    publish_drops,
    uplink_outage,
)
from devtools.chaos.scenario import GatewayScenario, Rig, Row
from devtools.chaos.serial import SerialVanish, serial_vanish

__all__ = [
    "AgentKills",
    "BrokerRestarts",
    "GatewayScenario",
    "Plan",
    "PublishDrops",
    "Rig",
    "Row",
    "SerialVanish",
    "UplinkOutage",
    "agent_kills",
    "broker_restarts",
    "main",
    "plan",
    "publish_drops",
    "render",
    "run_all",
    "serial_vanish",
    "uplink_outage",
]
