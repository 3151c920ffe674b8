"""Fixed lighting inputs in a file: motion arrivals and outages that both models read.

Owns: the file format and the kernel path's reader (:func:`read_kernel_arrays`: CSR arrays for
``simulate_lighting``), plus the generator of the shared test file
(``python -m twin.fixed_inputs OUT.json``). The plain-SimPy reference reads the same file with its
own reader (``twin.reference.read_fixed_inputs``), so a disagreement on a fixed input can only
come from the models, never from their random streams.

Format (JSON), absolute twin minutes (minute 0 is local noon of the first night)::

    {"format": "district-twin fixed lighting inputs 1", "days": N,
     "lamps": [{"arrivals": [t, ...], "outages": [[failed, repaired], ...]}, ...]}

Arrivals per lamp sorted within ``[0, N * 1440)``; outages sorted, disjoint, ``failed < repaired``
(a repair may fall after the horizon).

Must not import: simpy, twin.sim, twin.reference.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np

FORMAT = "district-twin fixed lighting inputs 1"


def read_kernel_arrays(
    path: str | Path, n_lamps: int
) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """((arrival_ptr, arrival_minutes), outage_ptr, outage_start, outage_end) for the kernel."""
    data = json.loads(Path(path).read_text())
    if data.get("format") != FORMAT:
        raise ValueError(f"{path}: not a fixed lighting input file (format {data.get('format')!r})")
    lamps = data["lamps"]
    if len(lamps) != n_lamps:
        raise ValueError(f"{path}: {len(lamps)} lamps in the file, the district has {n_lamps}")
    a_ptr = np.zeros(n_lamps + 1, dtype=np.int64)
    o_ptr = np.zeros(n_lamps + 1, dtype=np.int64)
    times: list[float] = []
    starts: list[float] = []
    ends: list[float] = []
    for i, lamp in enumerate(lamps):
        arrivals = [float(t) for t in lamp["arrivals"]]
        if arrivals != sorted(arrivals):
            raise ValueError(f"{path}: lamps[{i}].arrivals not sorted")
        times.extend(arrivals)
        for a, b in lamp["outages"]:
            if starts and len(starts) > o_ptr[i] and a < ends[-1]:
                raise ValueError(f"{path}: lamps[{i}].outages overlap or are not sorted")
            starts.append(float(a))
            ends.append(float(b))
        a_ptr[i + 1] = len(times)
        o_ptr[i + 1] = len(starts)
    return (a_ptr, np.array(times)), o_ptr, np.array(starts), np.array(ends)


def generate(seed: int, n_lamps: int, days: int) -> dict[str, object]:
    """A deterministic input with the edge cases that matter, for any site near 30 N.

    Per lamp and night: arrivals through the evening and night (local 16:00 to 08:00, so some
    fall in daylight and boost nothing), some on whole minutes, some just before a whole minute;
    outages starting and ending on fractional and whole minutes, one covering a whole night, one
    across local noon, one repaired after the horizon, arrivals during and at the edges of outages.
    """
    rng = random.Random(seed)
    horizon = days * 1440.0
    lamps = []
    for i in range(n_lamps):
        outages: list[tuple[float, float]] = []
        t = rng.uniform(0.0, 900.0)
        while t < horizon:
            kind = rng.random()
            if kind < 0.2:
                length = 1440.0  # a whole night out
            elif kind < 0.4:
                length = float(rng.randint(1, 90))  # whole minutes
                t = float(round(t))
            else:
                length = rng.uniform(0.3, 300.0)
            outages.append((t, t + length))
            t += length + rng.uniform(200.0, 2500.0)
        if i == 0:
            outages = [(1400.5, 1500.25)]  # across local noon, night 0 into night 1
        if i == 1:
            outages = [(horizon - 30.5, horizon + 600.0)]  # repaired after the horizon
        arrivals: list[float] = []
        for night in range(days):
            base = night * 1440.0
            for _ in range(rng.randint(5, 40)):
                k = rng.uniform(240.0, 1200.0)  # 16:00 .. 08:00 local
                shape = rng.random()
                if shape < 0.15:
                    k = float(round(k))
                elif shape < 0.25:
                    k = round(k) - 1e-7
                arrivals.append(base + k)
        for a, b in outages[:3]:  # at the very edges of outages
            for edge in (a, b, a - 0.5, b - 1e-9):
                if 0.0 <= edge < horizon and 240.0 <= edge % 1440.0 < 1200.0:
                    arrivals.append(edge)
        arrivals.sort()
        lamps.append({"arrivals": arrivals, "outages": [list(o) for o in outages]})
    return {"format": FORMAT, "days": days, "seed": seed, "lamps": lamps}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write a fixed lighting input file (arrivals, outages).")
    parser.add_argument("out", type=Path)
    parser.add_argument("--lamps", type=int, default=24)
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--seed", type=int, default=2025)
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(generate(args.seed, args.lamps, args.days), indent=None) + "\n")


if __name__ == "__main__":
    main()
