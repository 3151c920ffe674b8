# Recipes for developers and CI. `just --list` shows them all.
set positional-arguments

py := env_var_or_default("PYTHON", "python")

# One village night at accelerated time on the embedded broker (the main job)
demo *args:
    {{py}} -m devtools.demo "$@"

# The whole test suite on every core (real Mosquitto when on PATH, else the embedded broker)
test *args:
    {{py}} -m pytest -q -n auto --dist worksteal "$@"

# The inner loop: no broker, no MicroPython, no browser, nothing slow (tests/conftest.py, NEEDS)
test-fast *args:
    {{py}} -m pytest -q -n auto --dist worksteal --fast "$@"

# ruff, mypy strict on the packages, and the firmware type check against MicroPython stubs
lint:
    {{py}} -m ruff check .
    {{py}} -m ruff format --check edge_agent twin devtools tests
    {{py}} -m mypy
    {{py}} -m hardware.typecheck

# Benchmarks: rule engine throughput, end-to-end latency via Mosquitto, agent RSS, serial polling
bench *args:
    {{py}} -m devtools.bench "$@"

# Hardware-in-the-loop: MicroPython unix port on ptys by default; `just hil --port /dev/ttyUSB0` for a board
hil *args:
    {{py}} -m pytest -q -m hil tests/hil -p no:cacheprovider "$@"

# Copy a firmware and its config onto an RP2040 board: `just flash --port /dev/ttyACM0 [--firmware dongle] [--config node.json]`
flash *args:
    {{py}} -m hardware.flash "$@"

# The twin's speed figures (3,000-lamp year on threads, 30,000 lamps, JIT cold/cached, vs the reference)
twin-bench *args:
    {{py}} -m twin.cli bench "$@"

# The twin at city scale: 100,000 lamps on threads, 1,000,000 on a dask scheduler + 2 dask workers
twin-scale *args:
    {{py}} -m twin.cli bench --scale "$@"

# Compile the twin's kernels into the Numba cache now (after install), so runs start in about a second
twin-warm:
    {{py}} -m twin.cli warm

# A signed policy rolled out to 3,000 virtual lamps over 30 gateways on a private Mosquitto;
# `just fleet --runs 10`: ten fresh fleets, each run's table and time breakdown, then a summary
fleet *args:
    {{py}} -m devtools.fleet "$@"

# Fault injection, loopback only: kill -9 during an alert stream, broker restarts, uplink cut,
# dropped PUBACKs, a serial port vanishing mid-frame. `just chaos --quick` is the CI variant.
chaos *args:
    {{py}} -m devtools.chaos "$@"

# The district centre fed by 1,000 simulated gateways (100,000 lamps, 2,000 msg/s, alert bursts) over a
# private Mosquitto, on PostgreSQL and SQLite: ingest rate, commit lag, CPU, size, lost/doubled rows
bench-centre *args:
    {{py}} -m devtools.bench_centre "$@"

# The gateway against Node-RED on one Mosquitto, same harness (../shared/peers/nodered), one table
bench-peers *args:
    {{py}} -m devtools.bench_peers "$@"
