"""What the engine and dispatch know of the gateway's place: where it is, its lamps, its
responders (role, home, shift) and its devices.

Owns: ``Site``, ``SiteLamp``, ``SiteResponder``. Built from the config by the agent
(edge_agent/agent/app.py); read by the engine, its dispatch and the agent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from edge_agent.policy.dispatch_state import FULL_DAY


@dataclass(frozen=True, slots=True)
class SiteLamp:
    id: str
    group: str
    zone: str | None


@dataclass(frozen=True, slots=True)
class SiteResponder:
    id: str
    role: str
    x: float = 0.0
    y: float = 0.0
    shift: tuple[float, float] = FULL_DAY  # local clock minutes; may wrap midnight


@dataclass(frozen=True)
class Site:
    """What the engine needs to know of the gateway's place and devices."""

    gateway: str
    latitude: float
    longitude: float
    tz: ZoneInfo
    lamps: tuple[SiteLamp, ...] = ()
    responders: tuple[SiteResponder, ...] = ()
    devices: Mapping[str, tuple[str, str | None, str | None]] = field(default_factory=dict)
    # device id -> (kind, group, zone), for absence timers of devices never heard from
    traces_per_rule: int = 20
    # device id -> (x, y) metres from the gateway: where its alerts are dispatched from
    locations: Mapping[str, tuple[float, float]] = field(default_factory=dict)
