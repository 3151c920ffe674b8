"""The lamp simulator process of `just fleet`: virtual lamps for some gateways, on real MQTT.

Owns: ``python -m devtools.fleet_lamps --port P --lamps N --gateways a,b --control TOPIC``: one
process serving N simulated lamps (devtools/simdevices.py) for each gateway named, and the
fleet's loss control (a retained number on TOPIC: the share of lamp messages to drop).
"""

from __future__ import annotations

import argparse
import asyncio
import random

import aiomqtt

from devtools.simdevices import SimField, SimLamp
from edge_agent.clock import ScaledClock
from edge_agent.transports.mqtt_client import NO_DELAY


def lamp_ids(gateway: str, n: int) -> list[str]:
    return [f"{gateway}-l{j:03d}" for j in range(n)]


async def _serve_lamps(port: int, gateways: list[str], per_gateway: int, control: str) -> None:
    clock = ScaledClock()
    fields = []
    for index, gw in enumerate(gateways):
        sim = SimField(gw, "127.0.0.1", port, clock, keep_received=False, rng=random.Random(index))
        sim.lamps = {lamp: SimLamp(lamp, 100.0) for lamp in lamp_ids(gw, per_gateway)}
        fields.append(sim)

    async def obey_control() -> None:
        async with aiomqtt.Client("127.0.0.1", port, socket_options=NO_DELAY) as client:
            await client.subscribe(control, qos=1)
            async for message in client.messages:
                loss = float(message.payload) if isinstance(message.payload, bytes) else 0.0
                for sim in fields:
                    sim.loss = loss

    async with asyncio.TaskGroup() as group:
        group.create_task(obey_control())
        for sim in fields:
            group.create_task(sim.run())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devtools.fleet_lamps", description=__doc__)
    parser.add_argument("--port", type=int, required=True, help="the fleet's Mosquitto on 127.0.0.1")
    parser.add_argument("--lamps", type=int, required=True, help="lamps per gateway")
    parser.add_argument("--gateways", required=True, help="gateway ids, comma-separated")
    parser.add_argument("--control", required=True, help="the topic carrying the loss share")
    args = parser.parse_args(argv)
    asyncio.run(_serve_lamps(args.port, args.gateways.split(","), args.lamps, args.control))


if __name__ == "__main__":
    main()
