"""The parts every flow of the agent shares, built once by the composition root.

Owns: ``GatewayContext``, one frozen object handed to each flow (intake, outbound, lamps,
policy install, Home Assistant, the flusher) and to the HTTP face's read model, instead of a
long argument list each. A flow's own collaborators (the outbound for the intake, the lamps
for the outbound, ...) are passed beside it.
Must not import: the flows or the app.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from edge_agent.agent.alarm import Alarm
from edge_agent.agent.runtime import ActivePolicy, AgentStats, Background, Links, Unflushed
from edge_agent.clock import Clock
from edge_agent.config import GatewayConfig
from edge_agent.config.schema import Limits
from edge_agent.engine import Site
from edge_agent.store.db import Store


@dataclass(frozen=True)
class GatewayContext:
    config: GatewayConfig
    site: Site  # the devices and responders the config declares, as the engine sees them
    clock: Clock
    store: Store
    active: ActivePolicy  # the engine in force: read ``active.engine`` each time
    links: Links
    stats: AgentStats
    background: Background  # publishes nobody awaits
    alarm: Alarm
    timers_changed: asyncio.Event  # a handled event moved a timer: the timer loop looks again
    unflushed: Unflushed  # writes the flush loop batches

    @property
    def gateway(self) -> str:
        return self.config.id

    @property
    def limits(self) -> Limits:
        return self.config.file.limits
