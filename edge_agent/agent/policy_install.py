"""A policy bundle arriving over MQTT, as the running agent takes it: install and acknowledge.

Owns: handing a received envelope to ``PolicyDelivery`` (verify, accept durably, or refuse),
swapping the engine for one running an accepted policy (timers, alerts and the outbox live in
the store and carry over; lamps keep the level they show), starting the lamps' rollout and
queueing the ``policy/ack``.
Must not import: the app or the intake.
"""

from __future__ import annotations

import time

from edge_agent.agent.context import GatewayContext
from edge_agent.agent.lamps import Lamps
from edge_agent.agent.outbound import Outbound
from edge_agent.agent.policy_delivery import PolicyDelivery
from edge_agent.agent.recovery import fresh_engine
from edge_agent.models import PolicyAck
from edge_agent.policy.model import Policy


class PolicyInstaller:
    def __init__(self, context: GatewayContext, *, delivery: PolicyDelivery, outbound: Outbound, lamps: Lamps) -> None:
        self.site = context.site
        self.clock = context.clock
        self.store = context.store
        self.delivery = delivery
        self.active = context.active
        self.outbound = outbound
        self.lamps = lamps
        self.timers_changed = context.timers_changed
        self.traces_per_rule = context.limits.traces_per_rule

    async def receive(self, envelope: bytes) -> None:
        """A signed bundle: accepted (durably) and installed, a no-op, or refused; then acked."""
        if not envelope:
            return  # a cleared retained message
        received = time.time()
        outcome = self.delivery.receive(envelope, self.clock.now())
        if outcome.policy is not None and outcome.version is not None:
            self.install(outcome.policy, outcome.version, {"received": received, **outcome.stamps})
        ack = PolicyAck(
            v=1,
            ts=self.clock.now(),
            gateway=self.site.gateway,
            status=outcome.status,  # type: ignore[arg-type]
            version=outcome.version if outcome.version is not None else self.active.version,
            reason=outcome.reason,
            detail=outcome.detail,
        )
        self.outbound.policy_ack(ack)

    def install(self, policy: Policy, version: int, stamps: dict[str, float] | None = None) -> None:
        """Swap the engine for one running ``policy`` and push each lamp its program.

        Timers, alerts and the outbox live in the store and carry over; lamp levels are
        decided afresh, so every lamp gets a command, and the rollout loop sends each lamp its
        retained program until the lamp confirms the version. ``stamps`` (wall-clock times of
        the stages before this one) go into the rollout's timing line.
        """
        previous = self.active.engine
        self.store.rule_traces.add(previous.take_traces(), self.traces_per_rule)
        now = self.clock.now()
        with self.store.transaction():
            engine, effects = fresh_engine(previous, policy, self.site, self.store, now)  # lamps keep their level
            self.active.engine = engine
            self.active.version = version
            self.outbound.apply(effects)
        self.lamps.installed(
            version, {**(stamps or {}), "installed": time.time()}
        )  # every lamp gets its program now; the rollout loop sends it
        self.timers_changed.set()
