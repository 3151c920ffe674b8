"""``twin bench`` and ``twin warm``: the kernels' speed figures, and compiling them ahead of time.

Owns: these commands' progress display and tables; the procedures are ``twin.bench`` and
``twin.bench_scale``, the result files ``twin.bench_record``.
Must not import: edge_agent.agent/engine/transports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from twin.cli_common import console, load_or_exit


def bench(
    scenario: Annotated[Path, typer.Option(help="Scenario whose district is timed.")] = Path(
        "scenarios/naxi-3000.toml"
    ),
    days: Annotated[int, typer.Option(help="Nights (a year by default).")] = 365,
    threads: Annotated[
        int | None, typer.Option(help="Threads over lamp blocks (default: the cores this process may use).")
    ] = None,
    scale: Annotated[
        bool,
        typer.Option(
            "--scale",
            help="City and province: the district, 100,000 and 1,000,000 lamps on threads, then 1,000,000 lamps "
            "on a dask scheduler + 2 dask workers started here on loopback, a 30,000-lamp slice checked against "
            "this process (about 5-10 minutes on 2 cores). Writes bench-results/twin-scale.json.",
        ),
    ] = False,
    province_lamps: Annotated[int, typer.Option(help="--scale: lamps in the province run.")] = 1_000_000,
    city_lamps: Annotated[int, typer.Option(help="--scale: lamps in the city run (threads).")] = 100_000,
    local_lamps: Annotated[
        int, typer.Option(help="--scale: lamps run on this machine's threads without a cluster (0: skip).")
    ] = 1_000_000,
    workers: Annotated[int, typer.Option(help="--scale: dask worker processes.")] = 2,
    worker_threads: Annotated[int, typer.Option(help="--scale: --nthreads of each dask worker.")] = 1,
    memory_limit: Annotated[str, typer.Option(help="--scale: --memory-limit of each dask worker.")] = "3GiB",
    record: Annotated[
        bool,
        typer.Option(
            help="Write the figures to bench-results/<name>.json (the checkout's; ./bench-results from a wheel)."
        ),
    ] = True,
) -> None:
    """Speed figures: JIT cold/cached, a lamp-year on threads, the plain-SimPy reference ratio.

    Without --scale (about a minute): the district's year (lighting, motion, failures and
    repairs) on all cores and on one, 10x the lamps, parallel == serial, and the plain-SimPy
    reference with the same features timed in the same run (ratio per lamp-minute). Writes
    bench-results/twin-bench.json.
    """
    import os
    import sys

    from twin.bench import record_rows

    load_or_exit(scenario)
    load_start = os.getloadavg()
    command = "twin bench " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else "twin bench"
    if scale:
        from twin.bench_scale import run_scale

        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
        ) as bar:
            tasks = [bar.add_task("starting", total=None)]

            def stage(text: str) -> None:  # one line per stage; the province's shows lamps done
                bar.update(tasks[-1], visible=False)
                tasks.append(bar.add_task(text, total=None))

            def lamps(done: int, total: int) -> None:
                bar.update(tasks[-1], completed=done, total=total)

            rows = run_scale(
                str(scenario), days, city_lamps=city_lamps, province_lamps=province_lamps, local_lamps=local_lamps,
                workers=workers,
                worker_threads=worker_threads, memory_limit=memory_limit, threads=threads, stage=stage, lamps=lamps,
            )  # fmt: skip
        name, title = "twin-scale", "twin bench --scale (a city on threads, a province on Dask)"
    else:
        from twin.bench import run_bench

        with console.status("benchmarking (about a minute)...") as status:
            rows = run_bench(str(scenario), days, threads=threads, stage=lambda t: status.update(t + "..."))
        name, title = "twin-bench", "twin bench (Numba kernels, threads over lamp blocks)"
    table = Table(title=title)
    for col in ("measure", "value", "aim", "", "note"):
        table.add_column(col)
    for r in rows:
        mark = {True: "[green]met[/green]", False: "[red]missed[/red]", None: ""}[r.met]
        table.add_row(r.name, r.value, r.aim, mark, r.note)
    console.print(table)
    load_end = os.getloadavg()
    console.print(f"load average at start {load_start[0]:.1f}, at end {load_end[0]:.1f} ({os.cpu_count()} cores)")
    if record:
        console.print(record_rows(name, title, command, rows, {"loadavg_start": list(load_start)}))


def warm() -> None:
    """Compile the kernels into the Numba cache now (install time), so later runs load them."""
    import os

    from twin.bench_warm import warm_event_kernels
    from twin.city import warm_kernels

    with console.status("compiling the kernels..."):
        seconds = warm_kernels() + warm_event_kernels()
    console.print(f"kernels ready in {seconds:.1f} s, cache {os.environ.get('NUMBA_CACHE_DIR')}")
