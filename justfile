# Recipes for developers and CI. `just --list` shows them all.
set positional-arguments

py := env_var_or_default("PYTHON", "python")

# One village night at accelerated time on the embedded broker (the main job)
demo *args:
    {{py}} -m devtools.demo "$@"

# The whole test suite (real Mosquitto when on PATH, else the embedded broker)
test *args:
    {{py}} -m pytest -q "$@"

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

# The twin's speed figures (3,000-lamp year, 30,000 lamps, JIT cold/cached, vs the reference)
twin-bench:
    {{py}} -m twin.cli bench

# A signed policy rolled out to 3,000 virtual lamps over 30 gateways on a private Mosquitto
fleet *args:
    {{py}} -m devtools.fleet "$@"

# Fault injection, loopback only: kill -9 during an alert stream, broker restarts, uplink cut,
# dropped PUBACKs, a serial port vanishing mid-frame. `just chaos --quick` is the CI variant.
chaos *args:
    {{py}} -m devtools.chaos "$@"

# The gateway against Node-RED on one Mosquitto, same harness (../shared/peers/nodered), one table
bench-peers *args:
    {{py}} -m devtools.bench_peers "$@"
