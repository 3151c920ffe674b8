"""Simulated gateways for ``just bench-centre``: lamp telemetry and alert bursts at a set rate.

Owns: one feeder process (``python -m devtools.bench_centre_feed``), started by
devtools/bench_centre.py, usually two of them, each with its own share of the gateways. It
publishes exactly what a gateway's outbox sends north (edge_agent/agent/outbound.py,
``_enqueue_north``: ``district/v1/<gw>/telemetry/lamp/<lamp>`` with the lamp's state plus ``v``,
``msg_id``, ``seq``, ``gateway``, ``ts``; ``district/v1/<gw>/alert`` with an AlertMessage plus
``msg_id``) over QoS 1 on ONE MQTT connection (paho), on a fixed schedule: every lamp once per
``--interval`` seconds, spread evenly, plus every ``--burst-every`` seconds (the first after half of
``--burst-every``) a burst of alert
changes (``--burst`` gateways each raise one alert and notify its first responder).

Message ids are ``<run>-<feeder>-<n>`` (n = 0, 1, ... in publish order), so the driver knows
every id sent from the count alone. At the end the feeder waits for every PUBACK, then writes
``--out`` (JSON: counts per class, and the wall-clock publish time of every message, in order)
for the driver's commit-lag and loss figures.
Must not import: the centre (a feeder is a gateway's stand-in, nothing more).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Annotated

import msgspec
import paho.mqtt.client as mqtt
import typer
from paho.mqtt.enums import CallbackAPIVersion

TOPIC_ROOT = "district/v1"
_encode = msgspec.json.Encoder().encode


def gateway_name(index: int) -> str:
    return f"bench-g{index:04d}"


def lamp_name(index: int) -> str:
    return f"lamp-{index:03d}"


def telemetry(gateway: str, lamp: int, msg_id: str, seq: int, ts: float, round_: int) -> tuple[str, bytes]:
    """One lamp state report as a gateway's outbox sends it (the meter grows 50 Wh a report)."""
    level = 40.0 + (lamp % 7) * 10.0
    body = {
        "on": True,
        "level": level,
        "power_w": level * 0.6,
        "energy_wh": 1000.0 + 50.0 * round_ + lamp,
        "burn_hours": 5000.0 + round_ / 60.0,
        "faults": 0,
        "group": f"g{lamp % 4}",
        "ts": ts,
        "v": 1,
        "msg_id": msg_id,
        "seq": seq,
        "gateway": gateway,
    }
    return f"{TOPIC_ROOT}/{gateway}/telemetry/lamp/{lamp_name(lamp)}", _encode(body)


def alert(gateway: str, alert_id: str, status: str, step: int, msg_id: str, ts: float) -> tuple[str, bytes]:
    """One change of an alert (AlertMessage plus the outbox's msg_id)."""
    body = {
        "v": 1,
        "ts": ts,
        "alert_id": alert_id,
        "gateway": gateway,
        "device": "wearable-07",
        "kind": "sos",
        "priority": 1,
        "message": "SOS from wearable-07",
        "rule": "sos",
        "status": status,
        "responder": "nurse-1" if status == "notified" else None,
        "step": step,
        "msg_id": msg_id,
    }
    return f"{TOPIC_ROOT}/{gateway}/alert", _encode(body)


def main(
    port: Annotated[int, typer.Option(help="The broker's port on 127.0.0.1.")],
    out: Annotated[Path, typer.Option(help="Where to write the counts and publish times (JSON).")],
    first: Annotated[int, typer.Option(help="Index of this feeder's first gateway.")] = 0,
    gateways: Annotated[int, typer.Option(help="How many gateways this feeder plays.")] = 500,
    lamps: Annotated[int, typer.Option(help="Lamps per gateway.")] = 100,
    interval: Annotated[float, typer.Option(help="Each lamp reports once per this many seconds.")] = 60.0,
    seconds: Annotated[float, typer.Option(help="How long to publish.")] = 60.0,
    burst_every: Annotated[float, typer.Option(help="Seconds between alert bursts (0: none).")] = 15.0,
    burst: Annotated[int, typer.Option(help="Gateways raising an alert in each burst (2 changes each).")] = 50,
    start_at: Annotated[float, typer.Option(help="Wall-clock time to start (all feeders start together).")] = 0.0,
    run: Annotated[str, typer.Option(help="The run's tag, the first part of every msg_id.")] = "run",
    feeder: Annotated[int, typer.Option(help="This feeder's number, the second part of every msg_id.")] = 0,
) -> None:
    """Publish lamp telemetry and alert bursts for a share of the bench's gateways, then
    write what was sent (and when) to --out."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-feed-{run}-{feeder}", protocol=mqtt.MQTTv5)
    quiet = logging.getLogger("bench_centre_feed.paho")  # paho's loop logs a line per socket closed
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    client.enable_logger(quiet)
    client.max_inflight_messages_set(2000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port, keepalive=60)
    client.loop_start()
    deadline = time.monotonic() + 10
    while not client.is_connected():
        if time.monotonic() > deadline:
            raise SystemExit("feeder: cannot connect to the broker")
        time.sleep(0.01)
    total_lamps = gateways * lamps
    rate = total_lamps / interval  # telemetry messages a second
    n = 0
    times: list[float] = []
    infos: list[mqtt.MQTTMessageInfo] = []
    counts = {"telemetry": 0, "alert": 0}
    seqs = [0] * gateways

    def send(topic: str, payload: bytes, now: float, kind: str) -> None:
        nonlocal n
        infos.append(client.publish(topic, payload, qos=1))
        times.append(now)
        counts[kind] += 1
        n += 1

    if start_at:
        time.sleep(max(0.0, start_at - time.time()))
    t0 = time.time()
    sent_telemetry = 0
    next_burst = burst_every / 2 if burst_every > 0 else float("inf")  # the first half-way: --quick has one
    bursts = 0
    while True:
        now = time.time()
        elapsed = now - t0
        if elapsed >= seconds:
            break
        due = min(int(elapsed * rate) + 1, int(seconds * rate))
        while sent_telemetry < due:
            slot = sent_telemetry % total_lamps  # lamps in turn: gateway by gateway, lamp by lamp
            g, lamp = divmod(slot, lamps)
            gateway = gateway_name(first + g)
            seqs[g] += 1
            topic, payload = telemetry(
                gateway, lamp, f"{run}-{feeder}-{n}", seqs[g], now, sent_telemetry // total_lamps
            )
            send(topic, payload, now, "telemetry")
            sent_telemetry += 1
        if elapsed >= next_burst:
            for k in range(min(burst, gateways)):
                g = (bursts * burst + k) % gateways
                gateway = gateway_name(first + g)
                alert_id = f"{run}-{feeder}-a{bursts}-{k}"
                for step, status in enumerate(("raised", "notified")):
                    topic, payload = alert(gateway, alert_id, status, step, f"{run}-{feeder}-{n}", now)
                    send(topic, payload, now, "alert")
            bursts += 1
            next_burst += burst_every
        time.sleep(0.002)
    ended = time.time()
    for info in infos:
        info.wait_for_publish(timeout=60)
    unacked = sum(1 for info in infos if not info.is_published())
    client.disconnect()
    client.loop_stop()
    out.write_text(
        json.dumps(
            {
                "run": run,
                "feeder": feeder,
                "sent": n,
                "counts": counts,
                "unacked": unacked,
                "started": t0,
                "ended": ended,
                "times": times,
            }
        )
    )


if __name__ == "__main__":
    typer.run(main)
