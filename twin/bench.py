"""``twin bench``: lighting + failures for a 3,000-lamp year, against the plain-SimPy reference.

Owns: the benchmark procedure. Kernel time is measured after JIT warm-up on one core; the
reference model runs a small sample (a few lamps, a few nights) in the same process and is
extrapolated per lamp-step (one lamp, one minute). Compile time is measured in subprocesses:
cold with a fresh, empty NUMBA_CACHE_DIR, then cached with that same directory.

Must not import: twin.sim, dask.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from twin.kernels.failures import renewal_outages, time_to_failure
from twin.reference import reference_programs, run_reference
from twin.replication import HOURS_PER_YEAR, LightingInputs, light_district, prepare_lighting
from twin.scenario import load_scenario

_COMPILE_SCRIPT = """
import time
t0 = time.perf_counter()
import numpy as np
from twin.kernels.lighting import switch_table, program_levels, sun_table, dark_windows, simulate_lighting
from twin.kernels.failures import time_to_failure, renewal_outages
offs = np.full(3, 480.0)
on, off = switch_table(20000, 2, 28.0, 105.0, offs, np.zeros(1, np.int64), np.zeros(1),
                       np.zeros(1, np.int64), np.zeros(1))
lv, fl, el = program_levels(on, off, np.full(1, 100.0), np.zeros((1, 1)), np.zeros((1, 1)),
                            np.zeros(1, np.int64))
ds, de = dark_windows(sun_table(20000, 3, 28.0, 105.0, offs), 2)
ttf = time_to_failure(1, np.zeros(2), 2, 1e5, 4.0, 1e5)
ptr, s, e = renewal_outages(1, ttf, 2880.0, 5.0)
simulate_lighting(1, np.zeros(2, np.int64), np.zeros(2, np.int64), np.full(2, 60.0),
                  np.full(2, 1.0), lv, fl, el, np.zeros(1), np.zeros(1), np.ones((2, 24)),
                  ds, de, ptr, s, e, False, np.zeros(0, np.int64), np.zeros(0))
print(time.perf_counter() - t0)
"""


@dataclass
class BenchRow:
    name: str
    value: str
    note: str = ""


def _outages(inputs: LightingInputs, seed: int, tile: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded outage intervals for ``tile`` copies of the district (failures part of the timing)."""
    d = inputs.district
    n = d.n_lamps * tile
    age = np.random.default_rng(seed).uniform(0, 8, n) * HOURS_PER_YEAR
    ttf = time_to_failure(seed, age, 8, 25 * HOURS_PER_YEAR, 4.0, 14 * HOURS_PER_YEAR)
    ptr, start, end = renewal_outages(seed, ttf, inputs.days * 1440.0, 6.0)
    return ptr, start, end


def _timed_lighting(inputs: LightingInputs, seed: int, tile: int) -> float:
    """Seconds for failures + lighting of ``tile`` copies of the district over the horizon."""
    t0 = time.perf_counter()
    ptr, start, end = _outages(inputs, seed, tile)
    light_district(seed, inputs, ptr, start, end, tile=tile)
    return time.perf_counter() - t0


def _compile_seconds(cache_dir: str) -> float:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    out = subprocess.run(
        [sys.executable, "-c", _COMPILE_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def _reference_seconds_per_step(inputs: LightingInputs, scenario: str, lamps: int, days: int) -> float:
    loaded = load_scenario(scenario)
    p = inputs.programs
    programs = reference_programs(loaded.policy, p.names)
    d = inputs.district
    pick = np.linspace(0, d.n_lamps - 1, lamps).astype(int)
    spec = [
        {
            "program": int(d.lamp_program[i]),
            "area": int(d.lamp_area[i]),
            "rated_w": float(d.lamp_rated_w[i]),
            "standby_w": float(d.lamp_standby_w[i]),
        }
        for i in pick
    ]
    site = loaded.spec.site
    t0 = time.perf_counter()
    result = run_reference(
        1,
        inputs.first_day,
        days,
        site.latitude,
        site.longitude,
        list(inputs.offsets),
        spec,
        programs,
        inputs.rates,
        [[] for _ in pick],
    )
    return (time.perf_counter() - t0) / result.lamp_minutes


def run_bench(scenario: str, days: int = 365, sample_lamps: int = 6, sample_days: int = 3) -> list[BenchRow]:
    rows: list[BenchRow] = []
    with tempfile.TemporaryDirectory(prefix="twin-bench-numba-") as cache:
        cold = _compile_seconds(cache)
        cached = _compile_seconds(cache)
    rows.append(BenchRow("JIT compile, cold", f"{cold:.2f} s", "fresh NUMBA_CACHE_DIR, subprocess"))
    rows.append(BenchRow("JIT compile, cached", f"{cached:.2f} s", "same cache dir, subprocess"))
    loaded = load_scenario(scenario)
    inputs = prepare_lighting(loaded, days)
    n = inputs.district.n_lamps
    small = prepare_lighting(loaded, 2)
    _timed_lighting(small, 1, 1)  # warm-up (loads the compiled kernels)
    t_year = min(_timed_lighting(inputs, s, 1) for s in (1, 2))
    steps = n * days * 1440
    rows.append(
        BenchRow(
            f"{n:,} lamps x {days} nights, lighting + failures",
            f"{t_year:.2f} s",
            f"{steps / t_year / 1e6:,.0f} M lamp-minutes/s, one core",
        )
    )
    t_big = _timed_lighting(inputs, 3, 10)
    rows.append(
        BenchRow(
            f"{10 * n:,} lamps x {days} nights", f"{t_big:.2f} s", f"{10 * steps / t_big / 1e6:,.0f} M lamp-minutes/s"
        )
    )
    ref = _reference_seconds_per_step(inputs, scenario, sample_lamps, sample_days)
    kernel = t_year / steps
    rows.append(
        BenchRow(
            "reference (plain SimPy) per lamp-minute",
            f"{ref * 1e6:.2f} us",
            f"{sample_lamps} lamps x {sample_days} nights, extrapolated",
        )
    )
    rows.append(BenchRow("kernel per lamp-minute", f"{kernel * 1e9:.2f} ns"))
    rows.append(BenchRow("speed ratio kernel / reference", f"{ref / kernel:,.0f}x", "aim >= 1,000x"))
    rows.append(BenchRow("reference for the 3,000-lamp year (extrapolated)", f"{ref * steps / 3600:.1f} h"))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows.append(BenchRow("peak memory (RSS)", f"{peak:.0f} MiB", "this process"))
    rows.append(BenchRow("scenario", Path(scenario).name, f"cache {os.environ.get('NUMBA_CACHE_DIR')}"))
    return rows
