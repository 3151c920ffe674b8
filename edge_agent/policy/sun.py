"""Sun position and sun events after NOAA's solar calculator equations.

Owns: the sun maths. Pure scalar functions in the subset Numba compiles (``math`` only, floats
and ints, no objects), so the twin's kernels ``numba.njit`` these same functions.
NOAA's algorithm gives sunrise/sunset within a minute between +-72 degrees latitude with 0.833
degrees of refraction (docs/DOMAIN.md#sun); astral 3.x uses the same equations and is our test reference.

Days are counted as ``epoch_day``: days since 1970-01-01 of the *local* date. Minutes are local
minutes of that day (may fall outside 0..1440 near the poles or with large offsets).

Polar days and nights: when the sun does not cross a zenith on a day, :func:`sun_event` says
whether it stays above (polar day) or below (polar night); the lighting decision turns that into
its polar rule (``edge_agent.policy.lighting.night_switch_minutes``).
"""

from __future__ import annotations

import math

ZENITH_OFFICIAL = 90.833  # sunrise / sunset, with refraction and the sun's radius
ZENITH_CIVIL = 96.0  # civil dawn / dusk
ZENITH_NAUTICAL = 102.0

_JD_UNIX_EPOCH = 2440587.5


def _julian_century(julian_day: float) -> float:
    return (julian_day - 2451545.0) / 36525.0


def _sun_geometry(jc: float) -> tuple[float, float]:
    """(declination in degrees, equation of time in minutes) at Julian century ``jc``."""
    mean_long = (280.46646 + jc * (36000.76983 + jc * 0.0003032)) % 360.0
    mean_anom = 357.52911 + jc * (35999.05029 - 0.0001537 * jc)
    eccent = 0.016708634 - jc * (0.000042037 + 0.0000001267 * jc)
    m = math.radians(mean_anom)
    centre = (
        math.sin(m) * (1.914602 - jc * (0.004817 + 0.000014 * jc))
        + math.sin(2.0 * m) * (0.019993 - 0.000101 * jc)
        + math.sin(3.0 * m) * 0.000289
    )
    true_long = mean_long + centre
    omega = math.radians(125.04 - 1934.136 * jc)
    app_long = true_long - 0.00569 - 0.00478 * math.sin(omega)
    mean_obliq = 23.0 + (26.0 + (21.448 - jc * (46.815 + jc * (0.00059 - jc * 0.001813))) / 60.0) / 60.0
    obliq = math.radians(mean_obliq + 0.00256 * math.cos(omega))
    declination = math.degrees(math.asin(math.sin(obliq) * math.sin(math.radians(app_long))))
    y = math.tan(obliq / 2.0) ** 2
    l0 = math.radians(mean_long)
    eq_time = 4.0 * math.degrees(
        y * math.sin(2.0 * l0)
        - 2.0 * eccent * math.sin(m)
        + 4.0 * eccent * y * math.sin(m) * math.cos(2.0 * l0)
        - 0.5 * y * y * math.sin(4.0 * l0)
        - 1.25 * eccent * eccent * math.sin(2.0 * m)
    )
    return declination, eq_time


# Whether the sun crosses a zenith on a day (``sun_event``'s second value).
SUN_CROSSES = 0
SUN_ALWAYS_ABOVE = 1  # polar day for that zenith: no rising, no setting
SUN_ALWAYS_BELOW = -1  # polar night for that zenith


def sun_event(
    epoch_day: int,
    latitude: float,
    longitude: float,
    utc_offset_minutes: float,
    zenith: float,
    rising: bool,
) -> tuple[float, int]:
    """(local minute, state) of the sun crossing ``zenith``, rising or setting, on a local day.

    ``state`` is :data:`SUN_CROSSES` with the minute, or :data:`SUN_ALWAYS_ABOVE` /
    :data:`SUN_ALWAYS_BELOW` with NaN when the sun does not cross that zenith that day (polar day
    / polar night; decided by the same iteration that would give the minute, so a NaN minute
    always comes with its reason).
    """
    minute = 720.0 - 90.0 if rising else 720.0 + 90.0  # first guess, refined below
    lat = math.radians(latitude)
    for _ in range(3):
        jd = _JD_UNIX_EPOCH + epoch_day + (minute - utc_offset_minutes) / 1440.0
        declination, eq_time = _sun_geometry(_julian_century(jd))
        decl = math.radians(declination)
        cos_ha = math.cos(math.radians(zenith)) / (math.cos(lat) * math.cos(decl)) - math.tan(lat) * math.tan(decl)
        if cos_ha > 1.0:
            return math.nan, SUN_ALWAYS_BELOW
        if cos_ha < -1.0:
            return math.nan, SUN_ALWAYS_ABOVE
        hour_angle = math.degrees(math.acos(cos_ha))
        noon = 720.0 - 4.0 * longitude - eq_time + utc_offset_minutes
        minute = noon - 4.0 * hour_angle if rising else noon + 4.0 * hour_angle
    return minute, SUN_CROSSES


def sun_event_minute(
    epoch_day: int,
    latitude: float,
    longitude: float,
    utc_offset_minutes: float,
    zenith: float,
    rising: bool,
) -> float:
    """Local minute of the day when the sun crosses ``zenith``, rising or setting.

    Returns NaN when it does not cross that day (polar day or night; :func:`sun_event` says which).
    """
    return sun_event(epoch_day, latitude, longitude, utc_offset_minutes, zenith, rising)[0]


def solar_elevation(epoch_seconds: float, latitude: float, longitude: float) -> float:
    """Sun elevation above the horizon in degrees (no refraction) at a UTC instant."""
    jd = _JD_UNIX_EPOCH + epoch_seconds / 86400.0
    declination, eq_time = _sun_geometry(_julian_century(jd))
    utc_minutes = (epoch_seconds % 86400.0) / 60.0
    true_solar = (utc_minutes + eq_time + 4.0 * longitude) % 1440.0
    hour_angle = true_solar / 4.0 - 180.0
    lat = math.radians(latitude)
    decl = math.radians(declination)
    cos_zenith = math.sin(lat) * math.sin(decl) + math.cos(lat) * math.cos(decl) * math.cos(math.radians(hour_angle))
    cos_zenith = min(1.0, max(-1.0, cos_zenith))
    return 90.0 - math.degrees(math.acos(cos_zenith))


# Functions the twin registers with numba (register_jitable) so its kernels call these very ones.
JITABLE = (_julian_century, _sun_geometry, sun_event, sun_event_minute, solar_elevation)
