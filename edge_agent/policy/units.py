"""Parsing of human durations ("90s", "5m", "1h30m") and clock times ("22:30")."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(?:(\d+)\s*h)?\s*(?:(\d+)\s*m(?!s))?\s*(?:(\d+(?:\.\d+)?)\s*s)?\s*$")


def parse_duration(value: str | int | float) -> float:
    """Seconds from ``"90s"``, ``"5m"``, ``"1h30m"``, or a bare number of seconds.

    Raises ValueError with a message that shows the accepted forms.
    """
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 90s, 5m or 1h30m, got a boolean")  # noqa: TRY004
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"expected a non-negative duration, got {value}")
        return float(value)
    match = _DURATION.match(value)
    if not value.strip() or match is None or not any(match.groups()):
        raise ValueError(f"expected a duration such as '90s', '5m' or '1h30m', got {value!r}")
    hours, minutes, seconds = match.groups()
    return int(hours or 0) * 3600.0 + int(minutes or 0) * 60.0 + float(seconds or 0.0)


def parse_signed_duration(value: str) -> float:
    """Seconds from an offset such as ``"-15m"`` or ``"+10m"`` (sign optional)."""
    text = value.strip()
    sign = -1.0 if text.startswith("-") else 1.0
    return sign * parse_duration(text.lstrip("+-"))


def parse_clock(value: str) -> int:
    """Minute of the day from ``"HH:MM"`` (24 h clock)."""
    match = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*", value)
    if match is None:
        raise ValueError(f"expected a clock time 'HH:MM', got {value!r}")
    hour, minute = int(match.group(1)), int(match.group(2))
    if hour > 23 or minute > 59:
        raise ValueError(f"clock time out of range: {value!r}")
    return hour * 60 + minute
