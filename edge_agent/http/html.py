"""The two helpers every server-rendered page here needs (the gateway's status page and the
centre's console): escaping a value into HTML, and an age a person reads at a glance.
Must not import: anything of the agent (pure functions)."""

from __future__ import annotations

import html


def escape(value: object) -> str:
    """``value`` as HTML text or attribute (None is empty)."""
    return html.escape("" if value is None else str(value), quote=True)


def age(seconds: float) -> str:
    """``42 s``, ``12 min``, ``3.5 h``, ``2.1 d``."""
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"
