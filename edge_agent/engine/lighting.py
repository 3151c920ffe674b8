"""The lighting controller: each lamp's level from its program, boosts and overrides.

Owns: per-lamp runtime state (program, boost end, override) and turning the pure decision
(``policy.lighting.decide_level`` through ``CompiledProgram.level_at``) into ``LampSet``
effects when a lamp's level changes. Knows nothing of MQTT or Modbus.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from edge_agent.engine.effects import LampSet
from edge_agent.policy.programs import CompiledProgram

_EPOCH = date(1970, 1, 1).toordinal()


@dataclass(frozen=True, slots=True)
class LocalTime:
    epoch_day: int
    minute: float
    utc_offset_minutes: float
    weekday: int
    hour: int


def local_time(now: float, tz: ZoneInfo) -> LocalTime:
    moment = datetime.fromtimestamp(now, tz)
    offset = moment.utcoffset()
    return LocalTime(
        epoch_day=moment.date().toordinal() - _EPOCH,
        minute=moment.hour * 60 + moment.minute + moment.second / 60.0,
        utc_offset_minutes=offset.total_seconds() / 60.0 if offset else 0.0,
        weekday=moment.weekday(),
        hour=moment.hour,
    )


@dataclass(slots=True)
class LampState:
    lamp: str
    group: str
    zone: str | None
    program: CompiledProgram
    boost_until: float = 0.0
    override_level: float = -1.0
    override_reason: str = ""
    level: float | None = None  # last level decided (None: never decided)


class LightingController:
    def __init__(
        self,
        lamps: dict[str, LampState],
        latitude: float,
        longitude: float,
        tz: ZoneInfo,
    ) -> None:
        self.lamps = lamps
        self.latitude = latitude
        self.longitude = longitude
        self.tz = tz
        self.by_zone: dict[str, list[LampState]] = {}
        self.by_group: dict[str, list[LampState]] = {}
        for lamp in lamps.values():
            if lamp.zone:
                self.by_zone.setdefault(lamp.zone, []).append(lamp)
            self.by_group.setdefault(lamp.group, []).append(lamp)

    def decide(self, lamp: LampState, now: float, when: LocalTime) -> float:
        return lamp.program.level_at(
            when.epoch_day,
            when.minute,
            self.latitude,
            self.longitude,
            when.utc_offset_minutes,
            boost_active=now < lamp.boost_until,
            override_level=lamp.override_level,
        )

    def _update(self, lamps: list[LampState], now: float, reason: str) -> list[LampSet]:
        when = local_time(now, self.tz)
        changes: list[LampSet] = []
        for lamp in lamps:
            level = self.decide(lamp, now, when)
            if level != lamp.level:
                lamp.level = level
                why = lamp.override_reason if lamp.override_level >= 0 else reason
                if lamp.override_level < 0 and now < lamp.boost_until and level > 0:
                    why = "boost"
                changes.append(LampSet(lamp.lamp, level, why))
        return changes

    def tick(self, now: float) -> list[LampSet]:
        """Re-decide every lamp (called each minute of the timeline); changes only."""
        return self._update(list(self.lamps.values()), now, "program")

    def boost_zone(self, zone: str | None, now: float) -> tuple[list[LampSet], float]:
        """A person or vehicle seen in ``zone``: boost its lit lamps. Returns (changes, until)."""
        lamps = self.by_zone.get(zone or "", [])
        until = 0.0
        for lamp in lamps:
            if lamp.program.boost_minutes > 0:
                lamp.boost_until = max(lamp.boost_until, now + lamp.program.boost_minutes * 60.0)
                until = max(until, lamp.boost_until)
        return self._update(lamps, now, "boost"), until

    def resolve(self, device: str | None, group: str | None, zone: str | None) -> list[LampState]:
        if device is not None:
            return [self.lamps[device]] if device in self.lamps else []
        if group is not None:
            return list(self.by_group.get(group, []))
        return list(self.by_zone.get(zone or "", []))

    def override(self, lamps: list[str], level: float, reason: str, now: float) -> list[LampSet]:
        states = [self.lamps[name] for name in lamps if name in self.lamps]
        for lamp in states:
            lamp.override_level = level
            lamp.override_reason = reason
        return self._update(states, now, reason)

    def release(self, lamps: list[str], now: float) -> list[LampSet]:
        states = [self.lamps[name] for name in lamps if name in self.lamps]
        for lamp in states:
            lamp.override_level = -1.0
            lamp.override_reason = ""
        return self._update(states, now, "revert")
