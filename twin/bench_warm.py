"""Compile (or load) the kernels ``twin bench`` times: the event kernel's city run.

Owns: :func:`warm_event_kernels`, the two-night, two-lamp run through every function a timed
``run_city(..., kernel=event_kernel)`` calls, with the argument types it passes. ``twin bench``
times it in a fresh interpreter (cold: empty ``NUMBA_CACHE_DIR``; then cached) and ``twin warm``
runs it at install time beside ``twin.city.warm_kernels`` (the per-minute kernel's run).

What dominates a cold compile (``python -m twin.bench_warm`` with an empty ``NUMBA_CACHE_DIR``,
2 cores): before 2026-12-06 (h22-twin3) ``event_block`` took 5.9 s of 10.5 s on a quiet machine,
and the table kernels 3.4 s. Two causes, both gone: a slice assignment (``bigger[:n] = buf``,
growing the arrivals buffer) made Numba compile its shape-mismatch error path, about half of
``event_block``'s compile (and of ``lighting_block``'s); the tables (``twin.kernels.lighting_tables``)
are plain Python now, nothing to compile. Then: outputs and scratch arrays are allocated in
Python around ``event_block`` and ``_lamp_failures`` (each ``np.zeros``/``np.empty`` signature
inside a kernel compiles an overload of its own), and ``add_boost_stretch`` has an explicit
signature (compiled at import, where Numba's one-time set-up, ~0.5 s, is then paid). Same day,
load ~1.2-1.7: 3.6-3.7 s here; ``twin bench``'s figure (imports included), interleaved with
main: 3.8-4.0 s (main 9.8-12.8 s). Parts: ``event_block`` 2.1, ``lamp_outages`` 0.6,
``finish_by_hour`` 0.35, the rest imports (numba ~0.2 s) and ``add_boost_stretch``;
``event_block``'s own type inference and LLVM are most of what is left. Compile time moves with
the machine's load by 2x or more. The
motion tables and boost masks are plain Python (``twin.kernels.motion_plan``): nothing to compile.
The Numba cache is keyed on each source file's absolute path (and ``twin`` picks a cache
directory from a fingerprint of the sources), so a cache warmed in one checkout is not used by
another checkout of the same code.

Must not import: simpy, twin.sim, twin.reference, dask, typer, rich.
"""

from __future__ import annotations

import time

import numpy as np

from twin.kernels.failures import lamp_outages
from twin.kernels.lighting import finish_by_hour
from twin.kernels.lighting_events import event_kernel
from twin.kernels.lighting_tables import dark_windows, night_tables, program_levels, sun_table, switch_table
from twin.replication import FAILURE_DRAWS_PER_LAMP


def warm_event_kernels(report: dict[str, float] | None = None) -> float:
    """Compile or load each kernel of an event-kernel city run; returns seconds.

    ``report``, if given, receives each kernel's first-call seconds (compile or cache load).
    """
    t0 = time.perf_counter()
    last = t0

    def mark(name: str) -> None:
        nonlocal last
        now = time.perf_counter()
        if report is not None:
            report[name] = now - last
        last = now

    offs = np.full(3, 480.0)
    zi, zf = np.zeros(1, np.int64), np.zeros(1)
    on, off = switch_table(20000, 2, 28.0, 105.0, offs, zi, zf, zi, zf)
    levels, first_lit, end_lit = program_levels(on, off, np.full(1, 100.0), np.zeros((1, 1)), np.zeros((1, 1)), zi)
    sun = sun_table(20000, 3, 28.0, 105.0, offs)
    dark_start, dark_end = dark_windows(sun, 2)
    tables = tuple(night_tables(levels, zf, dark_start, dark_end))
    mark("tables")  # plain Python (twin.kernels.lighting_tables): nothing to compile
    ptr, start, end = lamp_outages(1, 0, 2, 0.0, 1e4, FAILURE_DRAWS_PER_LAMP, 1e3, 4.0, 1e5, 6.0, 2880.0)
    mark("lamp_outages")
    out = event_kernel(
        1, 0, np.zeros(2, np.int64), np.zeros(2, np.int64), np.full(2, 60.0), np.full(2, 1.0),
        levels, first_lit, end_lit, tables, zf, zf, np.ones((2, 24)), dark_start, dark_end,
        ptr, start, end, False, np.zeros(0, np.int64), np.zeros(0),
    )  # fmt: skip
    mark("event_block")
    finish_by_hour(out[7], out[9], tables[0], out[8])
    mark("finish_by_hour")
    return time.perf_counter() - t0


if __name__ == "__main__":  # per-kernel first-call seconds, as JSON: python -m twin.bench_warm
    import json

    times: dict[str, float] = {}
    total = warm_event_kernels(times)
    print(json.dumps({"total_s": round(total, 3), **{k: round(v, 3) for k, v in times.items()}}))
