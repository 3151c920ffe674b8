"""What a rule's condition and templates can name, computed lazily for one event.

Owns: ``RuleContext`` (event values first, then the event's own fields, then the gateway's
context: local time, the sun) and ``SunElevation`` (the sun's elevation at the gateway, cached
for 30 s: it moves about 0.1 degree in that time).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from edge_agent.engine.lighting import LocalTime, local_time
from edge_agent.engine.site import Site
from edge_agent.models import Event
from edge_agent.policy.sun import solar_elevation

DARK_BELOW = -0.833  # degrees of sun elevation: sunset and sunrise


class SunElevation:
    __slots__ = ("_cache", "latitude", "longitude")

    def __init__(self, latitude: float, longitude: float) -> None:
        self.latitude = latitude
        self.longitude = longitude
        self._cache: tuple[float, float] = (-1.0, 0.0)

    def __call__(self, now: float) -> float:
        cached_at, value = self._cache
        if abs(now - cached_at) > 30.0:
            value = solar_elevation(now, self.latitude, self.longitude)
            self._cache = (now, value)
        return value

    def is_dark(self, now: float) -> bool:
        return self(now) < DARK_BELOW


class RuleContext(Mapping[str, Any]):
    """Condition names, computed lazily: event values first, then the gateway's context."""

    __slots__ = ("_event", "_extra", "_local", "_site", "_sun")

    def __init__(self, site: Site, sun: SunElevation, event: Event, extra: Mapping[str, Any]) -> None:
        self._site = site
        self._sun = sun
        self._event = event
        self._extra = extra
        self._local: LocalTime | None = None

    def __getitem__(self, key: str) -> Any:
        if key in self._extra:
            return self._extra[key]
        data = self._event.data
        if key in data:
            return data[key]
        event = self._event
        if key == "device":
            return event.device
        if key == "kind":
            return event.kind
        if key == "event":
            return event.name
        if key == "ts":  # for templates: the event's time (a payload's own ts comes first)
            return event.ts
        if key == "gateway":
            return self._site.gateway
        if key == "zone" and event.zone is not None:
            return event.zone
        if key == "group" and event.group is not None:
            return event.group
        if key in ("hour", "minute", "weekday"):
            if self._local is None:
                self._local = local_time(event.ts, self._site.tz)
            local = self._local
            return {"hour": local.hour, "minute": int(local.minute), "weekday": local.weekday}[key]
        if key == "sun_elevation":
            return self._sun(event.ts)
        if key == "is_dark":
            return self._sun(event.ts) < DARK_BELOW
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._event.data)

    def __len__(self) -> int:
        return len(self._event.data)
