"""Numba kernels of the twin: arrays in, arrays out, seeded RNG, ``cache=True``.

Owns: registering the gateway's pure policy functions with Numba, once, before any kernel is
defined, so the kernels call *those very functions* (``register_jitable`` on every function in
``sun.JITABLE``, ``lighting.JITABLE`` and ``dispatch.JITABLE``); the kernels themselves live in
the submodules (``lighting_tables``: switch minutes, sun events, program levels, darkness, a
unit lamp's power, plain Python calling the policy functions: nothing to compile;
``lighting``: each lamp's level every minute, energy (the exact reference);
``lighting_events``: the same by events, motion as Poisson counts per night and a minute bitmap
(its tables: ``motion_plan``); ``arrivals``: motion draws; ``failures``: hazard sampling and
kernel-side renewal).

Must not import: simpy, twin.sim, twin.reference, anything doing I/O. Importing ``twin`` first
(always the case: this is a subpackage) has set ``NUMBA_CACHE_DIR`` to a source-keyed directory.
"""

from __future__ import annotations

from numba.extending import register_jitable

from edge_agent.policy import dispatch as _dispatch
from edge_agent.policy import lighting as _lighting
from edge_agent.policy import sun as _sun

_REGISTERED = False


def register_policy_functions() -> None:
    """Make every pure policy function callable from @njit code (idempotent)."""
    global _REGISTERED
    if _REGISTERED:
        return
    for function in (*_sun.JITABLE, *_lighting.JITABLE, *_dispatch.JITABLE):
        register_jitable(function)
    _REGISTERED = True


register_policy_functions()
