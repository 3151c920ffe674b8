"""Sunset / sunrise on the node: edge_agent/policy/sun.py's NOAA equations in the subset
MicroPython has (math only; no typing at run time), arranged for single-precision floats
(the RP2040 port's): time is counted from J2000 as a small day number, never a Julian day.

``night(day, ...)`` gives the (on, off) minutes of the night starting on the evening of local
day ``day`` (days since 2000-01-01 local), like edge_agent.policy.lighting.night_switch_minutes,
with the same polar rule (when the sun does not set or rise that day).
Tested against the gateway's module under the MicroPython unix port (tests/hil/test_node_sun.py).
Must not import: anything but math. Allocates (floats): call once per night, not per poll.
"""

import math

SUN = 0  # sunset / sunrise + offset (HR_ON_KIND / HR_OFF_KIND)
CIVIL = 1  # civil dusk / dawn + offset
CLOCK = 2  # a fixed clock minute (the stored step minute)

_ZENITH_OFFICIAL = 90.833
_ZENITH_CIVIL = 96.0
_RAD = math.pi / 180.0
_ABOVE = 1.0e6  # _event: the sun stays above the zenith all day (polar day)
_BELOW = -1.0e6  # ... below it all day (polar night)
NIGHT_START = 720  # local noon: on at the night's first minute (polar night)
NIGHT_END = 1440  # off at the end of the night, the next local noon (polar night next day)


def _geometry(d: float) -> "tuple[float, float]":
    """(declination deg, equation of time min) at ``d`` days after J2000.0 (2000-01-01 12:00 UT)."""
    jc = d / 36525.0
    mean_long = (280.46646 + jc * (36000.76983 + jc * 0.0003032)) % 360.0
    mean_anom = 357.52911 + jc * (35999.05029 - 0.0001537 * jc)
    eccent = 0.016708634 - jc * (0.000042037 + 0.0000001267 * jc)
    m = (mean_anom % 360.0) * _RAD
    centre = (math.sin(m) * (1.914602 - jc * (0.004817 + 0.000014 * jc))
              + math.sin(2.0 * m) * (0.019993 - 0.000101 * jc) + math.sin(3.0 * m) * 0.000289)
    omega = ((125.04 - 1934.136 * jc) % 360.0) * _RAD
    app_long = mean_long + centre - 0.00569 - 0.00478 * math.sin(omega)
    mean_obliq = 23.0 + (26.0 + (21.448 - jc * (46.815 + jc * (0.00059 - jc * 0.001813))) / 60.0) / 60.0
    obliq = (mean_obliq + 0.00256 * math.cos(omega)) * _RAD
    decl = math.asin(math.sin(obliq) * math.sin(app_long * _RAD)) / _RAD
    y = math.tan(obliq / 2.0)
    y = y * y
    l0 = mean_long * _RAD
    eq = 4.0 / _RAD * (y * math.sin(2.0 * l0) - 2.0 * eccent * math.sin(m)
                       + 4.0 * eccent * y * math.sin(m) * math.cos(2.0 * l0)
                       - 0.5 * y * y * math.sin(4.0 * l0) - 1.25 * eccent * eccent * math.sin(2.0 * m))
    return decl, eq


def event_minute(day: int, lat: float, lon: float, utc_offset: int, zenith: float, rising: bool) -> float:
    """Local minute of ``day`` (days since 2000-01-01 local) when the sun crosses ``zenith``;
    NaN when it does not (polar day or night)."""
    m = _event(day, lat, lon, utc_offset, zenith, rising)
    return math.nan if m == _ABOVE or m == _BELOW else m


def _event(day: int, lat: float, lon: float, utc_offset: int, zenith: float, rising: bool) -> float:
    """event_minute, or _ABOVE / _BELOW when the sun stays above / below ``zenith`` all day."""
    minute = 630.0 if rising else 810.0
    latr = lat * _RAD
    base = day - 0.5  # J2000.0 is 2000-01-01 12:00
    for _ in range(3):
        decl, eq = _geometry(base + (minute - utc_offset) / 1440.0)
        dr = decl * _RAD
        cos_ha = math.cos(zenith * _RAD) / (math.cos(latr) * math.cos(dr)) - math.tan(latr) * math.tan(dr)
        if cos_ha > 1.0:
            return _BELOW
        if cos_ha < -1.0:
            return _ABOVE
        ha = math.acos(cos_ha) / _RAD
        noon = 720.0 - 4.0 * lon - eq + utc_offset
        minute = noon - 4.0 * ha if rising else noon + 4.0 * ha
    return minute


def night(day: int, lat: float, lon: float, utc_offset: int,
          on_kind: int, on_value: int, off_kind: int, off_value: int) -> "tuple[int, int]":
    """(on, off) minutes of day (0..1439) of the night starting on the evening of ``day``.
    A CLOCK kind returns -1 for that end (the caller keeps its stored minute). The polar rule,
    as the gateway's (offsets do not apply to these substitutes):
    evening sun always below (polar night): on at NIGHT_START (local noon);
    evening sun always above (polar day): dark all night, (NIGHT_START, NIGHT_START);
    next morning sun always below: off at NIGHT_END (1440: the next local noon);
    next morning sun always above: off at 0 (local midnight)."""
    on = -1
    off = -1
    if on_kind != CLOCK:
        m = _event(day, lat, lon, utc_offset, _ZENITH_OFFICIAL if on_kind == SUN else _ZENITH_CIVIL, False)
        if m == _ABOVE:
            return NIGHT_START, NIGHT_START
        on = NIGHT_START if m == _BELOW else round(m + on_value) % 1440
    if off_kind != CLOCK:
        m = _event(day + 1, lat, lon, utc_offset, _ZENITH_OFFICIAL if off_kind == SUN else _ZENITH_CIVIL, True)
        if m == _BELOW:
            off = NIGHT_END
        elif m == _ABOVE:
            off = 0
        else:
            off = round(m + off_value) % 1440
    return on, off
