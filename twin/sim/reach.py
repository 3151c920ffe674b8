"""How a notification reaches a person and when the person answers: the world's side of one
notification, drawn per notification.

Owns: delay distributions (lognormal by median and p90, exponential by mean), the channels a
tier can be reached by and the tier's answer. The policy decides, the scenario models the world:

* A notification goes by its chain's ``channels`` (edge_agent/policy/chains.py), among those the
  tier has: the scenario's declared ``[channels.<name>]``, narrowed by the tier's
  ``[dispatch.answer.<role>] channels`` list (some doctors have no push). A scenario that
  declares channels must declare every channel its policy's chains use (checked at load,
  ``twin.scenario_channels``), so a policy channel is never silently modelled as perfect.
* Each channel starts at its chain's ``after`` offset (0: at once; a delayed channel is only
  tried while the step is unanswered, which only matters when it would come later than the
  answer anyway): it fails with its probability, else delivers at offset + its delay, plus the
  wait for the incident gateway's uplink from its start when its route needs one
  (``internet`` always, ``lan`` for responders not on the village LAN, ``cellular`` never).
* The responder is reached at the earliest successful delivery and then acknowledges with the
  tier's probability after the tier's answer delay.
* Every channel failed: the responder is never reached, and the failure is known at the last
  channel's offset + its delay draw: the dispatcher then lets the step's ack timeout fall at once
  (the gateway's ``GatewayDispatch.unreachable``), not at the chain's ack timeout.
* No channel declared in the scenario: a notification reaches the responder at once (after the
  uplink if not local): the twin's behaviour, and random draws, from before channels.

Every draw of a notification is made whatever its outcome (each channel's failure and delay in
the tier's channel order, then the answer), so the random stream does not depend on timing. The
acknowledgement's way back is not modelled apart (a reply returns the way its message came,
inside the answer delay). Units: twin minutes.

The scenario tables this is built from are described in ``twin.scenario_channels``.

Must not import: numba, twin.kernels, edge_agent.agent/engine/transports.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from edge_agent.policy.model import Policy
from twin.scenario import Scenario, chain_channel_starts
from twin.scenario_channels import CHANNEL_ROUTES, AnswerSpec, ChannelSpec

Z90 = 1.2815515655446004  # the standard normal's 90th percentile


@dataclass(frozen=True)
class Delay:
    """A random delay in twin minutes: lognormal (``median`` > 0, ``sigma`` of its log) or
    exponential (``mean``; 0: no delay)."""

    median: float = 0.0
    sigma: float = 0.0
    mean: float = 0.0

    @classmethod
    def from_seconds(cls, median: float | None, p90: float | None, mean: float | None) -> Delay | None:
        """The scenario's form (seconds) as a ``Delay``; None when no form is given."""
        if median is not None and p90 is not None:
            return cls(median=median / 60.0, sigma=math.log(p90 / median) / Z90)
        if mean is not None:
            return cls(mean=mean / 60.0)
        return None

    def draw(self, rng: np.random.Generator) -> float:
        if self.median > 0:
            return float(rng.lognormal(math.log(self.median), self.sigma))
        return float(rng.exponential(self.mean)) if self.mean > 0 else 0.0


@dataclass(frozen=True)
class Channel:
    name: str
    delay: Delay
    failure: float = 0.0
    route: str = "cellular"  # "lan", "internet" or "cellular"


@dataclass(frozen=True)
class Tier:
    """A responder role's answer: probability, delay after the message arrives, and the channels
    the role can be reached by (the scenario's, in its order)."""

    probability: float = 1.0
    delay: Delay = Delay()
    channels: tuple[Channel, ...] = ()


@dataclass(frozen=True)
class Outcome:
    """One notification's fate, in minutes from its sending: the acknowledgement (None: never)
    and, when every channel failed, when the last failure is known (None: some channel delivered)."""

    ack: float | None = None
    unreachable: float | None = None


# A chain's channels and when each starts (minutes after the step starts): the policy's
# ``channels`` and ``after``. The default, for a dispatcher without a policy: every channel at once.
EVERY_CHANNEL_AT_ONCE: Mapping[str, float] = MappingProxyType(dict.fromkeys(CHANNEL_ROUTES, 0.0))

UplinkWait = Callable[[float], float]  # minutes until the uplink is up, from ``start`` minutes on


@dataclass(frozen=True)
class Reach:
    """The tiers by role; ``default`` for a role without its own."""

    tiers: Mapping[str, Tier] = field(default_factory=dict)
    default: Tier = Tier()

    def tier(self, role: str) -> Tier:
        return self.tiers.get(role, self.default)

    def reached(
        self, tier: Tier, starts: Mapping[str, float], local: bool, uplink_wait: UplinkWait, rng: np.random.Generator
    ) -> tuple[float | None, float | None]:
        """``(reached, failed)``: minutes until the earliest successful delivery by the tier's
        channels that are in ``starts`` (None: every one failed), and then until the last
        failure is known (None: not all failed)."""
        if not tier.channels:
            return (0.0 if local else uplink_wait(0.0)), None
        best, failed = math.inf, 0.0
        for channel in tier.channels:
            start = starts.get(channel.name)
            if start is None:
                continue
            lost = rng.random() < channel.failure
            delay = start + channel.delay.draw(rng)
            if lost:
                failed = max(failed, delay)
                continue
            if channel.route == "internet" or (channel.route == "lan" and not local):
                delay += uplink_wait(start)
            best = min(best, delay)
        return (best, None) if math.isfinite(best) else (None, failed)

    def outcome(
        self,
        role: str,
        starts: Mapping[str, float],
        local: bool,
        uplink_wait: UplinkWait,
        rng: np.random.Generator,
    ) -> Outcome:
        """A notification to a responder of ``role`` by the chain's channels ``starts`` (each
        with its start offset, minutes)."""
        tier = self.tier(role)
        reached, failed = self.reached(tier, starts, local, uplink_wait, rng)
        answers = rng.random() < tier.probability
        delay = tier.delay.draw(rng)
        return Outcome(reached + delay if reached is not None and answers else None, failed)


def reach_from_scenario(spec: Scenario) -> Reach:
    """The scenario's channels and answer tiers (validated at load) as a ``Reach``."""
    channels = {name: _channel(name, c) for name, c in spec.channels.items()}
    dispatch = spec.dispatch
    default = Tier(dispatch.ack_probability, Delay(mean=dispatch.ack_delay_minutes), tuple(channels.values()))
    return Reach({role: _tier(a, default, channels) for role, a in dispatch.answer.items()}, default)


def _channel(name: str, spec: ChannelSpec) -> Channel:
    delay = Delay.from_seconds(spec.median_seconds, spec.p90_seconds, spec.mean_seconds)
    return Channel(name, delay or Delay(), spec.failure, CHANNEL_ROUTES[name])


def _tier(spec: AnswerSpec, default: Tier, channels: Mapping[str, Channel]) -> Tier:
    delay = Delay.from_seconds(spec.median_seconds, spec.p90_seconds, spec.mean_seconds)
    return Tier(
        default.probability if spec.probability is None else spec.probability,
        default.delay if delay is None else delay,
        default.channels if spec.channels is None else tuple(channels[name] for name in spec.channels),
    )


def describe_channels(spec: Scenario, policy: Policy) -> dict[str, str]:
    """Per tier (role), how its notifications go, chain by chain: the policy's channels the tier
    has, each with its delay ("medical: app, sms, ring after 45 s"), for the report."""
    reach = reach_from_scenario(spec)
    out: dict[str, list[str]] = {}
    for name in policy.chains:
        starts = chain_channel_starts(policy, name)
        for role in policy.chains[name].roles:
            has = {c.name for c in reach.tier(role).channels}
            channels = [c for c in starts if c in has]
            text = ", ".join(c + (f" after {starts[c] * 60:g} s" if starts[c] else "") for c in channels)
            out.setdefault(role, []).append(f"{name}: {text or 'at once (no channel declared)'}")
    return {role: "; ".join(texts) for role, texts in out.items()}
