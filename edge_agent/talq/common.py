"""What the TALQ exporter and importer share: the site, errors, clock text and the switch-on check.

Owns: ``Site`` (where a program's sun events are computed), ``TalqError`` (a malformed TALQ
document, naming the JSON path), the ``hh:mm:ss`` conversions, and ``switch_on_divergence``:
the one place where our program model and TALQ's differ for programs that both can hold.

The difference: TALQ fixed-time controls wrap from day to day, so the level in force at a
sun-based switch-on is the last control at or before it; our model starts every night at the
program's base level and only applies steps at or after switch-on (``lighting.program_level``).
We put the base level at 12:00 (the start of our night), so the two agree unless a step falls
between noon and switch-on on some night, which this check finds (exactly, over a year, when
the site is known; conservatively when it is not).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from edge_agent.policy.lighting import (
    SWITCH_CIVIL,
    SWITCH_CLOCK,
    SWITCH_SUN,
    is_lit,
    night_minute,
    night_switch_minutes,
    program_level,
)
from edge_agent.policy.sun import ZENITH_CIVIL, ZENITH_OFFICIAL, sun_event_minute

TALQ_VERSION = "2.7.1"
NOON = 720  # our night starts at local noon; the base level is exported as a control at 12:00
DEFAULT_OWNER_CMS = "district-lights"
_EPOCH = date(1970, 1, 1).toordinal()
_TIME = re.compile(r"^([01]\d|2[0-3]):([0-5]\d):([0-5]\d)$")


class TalqError(ValueError):
    """A TALQ document we cannot read: ``path`` is the JSON path of the offending value."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


@dataclass(frozen=True, slots=True)
class Site:
    """Where the lamps are: sun events and the local UTC offset come from here."""

    latitude: float
    longitude: float
    tz: str
    year: int = 2025

    def nights(self) -> list[tuple[int, float]]:
        """(epoch day, UTC offset in minutes at local noon) for every evening of the year."""
        zone = ZoneInfo(self.tz)
        first = date(self.year, 1, 1)
        out: list[tuple[int, float]] = []
        day = first
        while day.year == self.year:
            offset = datetime(day.year, day.month, day.day, 12, tzinfo=zone).utcoffset()
            out.append((day.toordinal() - _EPOCH, offset.total_seconds() / 60.0 if offset else 0.0))
            day += timedelta(days=1)
        return out


def clock_text(minute: int) -> str:
    """A local minute of the day as TALQ's ``hh:mm:ss``."""
    return f"{minute // 60:02d}:{minute % 60:02d}:00"


def hhmm(minute: int) -> str:
    """A local minute of the day as our ``HH:MM``."""
    return f"{minute // 60:02d}:{minute % 60:02d}"


def parse_time(value: object, path: str) -> tuple[int, int]:
    """TALQ ``hh:mm:ss`` -> (minute of the day, seconds); TalqError naming ``path`` otherwise."""
    if not isinstance(value, str) or (match := _TIME.match(value)) is None:
        raise TalqError(path, f"expected a time 'hh:mm:ss', got {value!r}")
    hours, minutes, seconds = (int(g) for g in match.groups())
    return hours * 60 + minutes, seconds


def switch_text(kind: int, value: float, *, evening: bool) -> str:
    """Our switch notation from a kind and offset: ``sunset+5m``, ``dawn-10m``, ``18:30``."""
    if kind == SWITCH_CLOCK:
        return hhmm(int(value))
    sun, civil = ("sunset", "dusk") if evening else ("sunrise", "dawn")
    event = sun if kind == SWITCH_SUN else civil
    minutes = round(value)
    if minutes == 0:
        return event
    return f"{event}{'+' if minutes > 0 else '-'}{abs(minutes)}m"


@dataclass(frozen=True, slots=True)
class Switching:
    """A program's switch points and night schedule, as both sides read them."""

    on_kind: int
    on_value: float
    off_kind: int
    off_value: float
    base: float
    steps: tuple[tuple[int, float], ...]  # (clock minute, level), in night order


def _levels_at_switch_on(switching: Switching, on: float, off: float) -> tuple[float, float, int] | None:
    """(TALQ's level, ours, index of the step TALQ uses) at the first lit whole minute, if lit at all."""
    first = (on + math.ceil(night_minute(on)) - night_minute(on)) % 1440.0
    if not is_lit(first, on, off):
        return None
    minutes = tuple(float(at) for at, _ in switching.steps)
    levels = tuple(level for _, level in switching.steps)
    ours = program_level(first, on, off, switching.base, minutes, levels, len(minutes))
    talq = program_level(first, float(NOON), off, switching.base, minutes, levels, len(minutes))
    index = -1
    for i, at in enumerate(minutes):
        if night_minute(at) <= night_minute(first):
            index = i
    return talq, ours, index


def earliest_switch_on(switching: Switching, site: Site) -> int | None:
    """The clock minute at or before every lit night's switch-on at the site (None: never lit).

    A TALQ fixed-time control between noon and this minute always comes before switch-on, so the
    importer folds it into the base level exactly.
    """
    earliest: float | None = None
    for day, offset in site.nights():
        on, off = night_switch_minutes(
            day,
            site.latitude,
            site.longitude,
            offset,
            switching.on_kind,
            switching.on_value,
            switching.off_kind,
            switching.off_value,
        )
        if night_minute(on) < night_minute(off):
            earliest = night_minute(on) if earliest is None else min(earliest, night_minute(on))
    if earliest is None:
        return None
    return (math.floor(earliest) + NOON) % 1440


def switch_on_divergence(switching: Switching, site: Site | None) -> list[tuple[int, str]]:
    """Steps (by index) that TALQ would apply from a sun-based switch-on where we use the base level.

    Also reports (index -1) when the sun does not rise or set on some nights at the site: the
    gateway then applies its polar rule (``night_switch_minutes``), which TALQ does not define.
    """
    found: dict[int, str] = {}
    if switching.on_kind == SWITCH_CLOCK:
        return []  # exact: both sides drop (export) or fold into the base (import) steps before it
    if site is None:
        for i, (at, level) in enumerate(switching.steps):
            if night_minute(at) < NOON and level != switching.base:
                found[i] = (
                    "if it comes before the sun-based switch-on on some nights, TALQ applies it from "
                    f"switch-on where we start at the base level {switching.base:g} (no site given to check)"
                )
        return sorted(found.items())
    polar = 0
    for day, offset in site.nights():
        for kind, rising, when in ((switching.on_kind, False, day), (switching.off_kind, True, day + 1)):
            if kind != SWITCH_CLOCK:
                zenith = ZENITH_OFFICIAL if kind == SWITCH_SUN else ZENITH_CIVIL
                polar += math.isnan(sun_event_minute(when, site.latitude, site.longitude, offset, zenith, rising))
        on, off = night_switch_minutes(
            day,
            site.latitude,
            site.longitude,
            offset,
            switching.on_kind,
            switching.on_value,
            switching.off_kind,
            switching.off_value,
        )
        levels = _levels_at_switch_on(switching, on, off)
        if levels is not None and levels[0] != levels[1] and levels[2] not in found:
            found[levels[2]] = (
                f"it comes before switch-on on some nights at {site.latitude:g}, {site.longitude:g} "
                f"(first: {date.fromordinal(day + _EPOCH)}); TALQ applies it from switch-on where we "
                f"start at the base level {switching.base:g}"
            )
    if polar:
        found[-1] = (
            f"the sun does not cross the horizon for {polar} switch events at this site: the gateway applies "
            "its polar rule (polar night: lit from noon to noon; polar day: the sun switch never fires), "
            "TALQ leaves it to the controller"
        )
    return sorted(found.items())


__all__ = [
    "DEFAULT_OWNER_CMS",
    "NOON",
    "SWITCH_CIVIL",
    "SWITCH_CLOCK",
    "SWITCH_SUN",
    "TALQ_VERSION",
    "Site",
    "Switching",
    "TalqError",
    "clock_text",
    "earliest_switch_on",
    "hhmm",
    "parse_time",
    "switch_on_divergence",
    "switch_text",
]
