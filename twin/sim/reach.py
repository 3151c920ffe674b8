"""How a notification reaches a person and when the person answers: the world's side of one
notification, drawn per notification.

Owns: delay distributions (lognormal by median and p90, exponential by mean), the channels a
tier is notified by and the tier's answer. Every channel of the tier is tried at once: each
fails with its probability, else delivers after its delay, plus the wait for the incident
gateway's uplink when its route needs one (``internet`` always, ``lan`` for responders not on
the village LAN, ``cellular`` never). The responder is reached at the earliest successful
delivery (every channel failed: never reached, so the chain escalates at its ack timeout) and
then acknowledges with the tier's probability after the tier's answer delay. With no channel
declared a notification reaches the responder at once (after the uplink if not local): the
twin's behaviour, and random draws, from before channels. The acknowledgement's way back is
not modelled apart (a reply returns the way its message came, inside the answer delay). Units:
twin minutes.

The scenario tables this is built from are described in ``twin.scenario_channels``.

Must not import: numba, twin.kernels, edge_agent.agent/engine/transports.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from twin.scenario import Scenario
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
    """A responder role's answer: probability, delay after the message arrives, and channels."""

    probability: float = 1.0
    delay: Delay = Delay()
    channels: tuple[Channel, ...] = ()


@dataclass(frozen=True)
class Reach:
    """The tiers by role; ``default`` for a role without its own."""

    tiers: Mapping[str, Tier] = field(default_factory=dict)
    default: Tier = Tier()

    def tier(self, role: str) -> Tier:
        return self.tiers.get(role, self.default)

    def reached(
        self, tier: Tier, local: bool, uplink_wait: Callable[[], float], rng: np.random.Generator
    ) -> float | None:
        """Minutes until the earliest successful delivery (None: every channel failed)."""
        if not tier.channels:
            return 0.0 if local else uplink_wait()
        best = math.inf
        for channel in tier.channels:
            failed = rng.random() < channel.failure
            delay = channel.delay.draw(rng)
            if failed:
                continue
            if channel.route == "internet" or (channel.route == "lan" and not local):
                delay += uplink_wait()
            best = min(best, delay)
        return best if math.isfinite(best) else None

    def ack_delay(
        self, role: str, local: bool, uplink_wait: Callable[[], float], rng: np.random.Generator
    ) -> float | None:
        """Minutes from a notification until a responder of ``role`` acknowledges it (None: never)."""
        tier = self.tier(role)
        reached = self.reached(tier, local, uplink_wait, rng)
        answers = rng.random() < tier.probability
        delay = tier.delay.draw(rng)
        return reached + delay if reached is not None and answers else None


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
