"""Shared fixtures: a real MQTT broker on a free port (Mosquitto when on PATH, else amqtt)."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, settings

from devtools.mosquitto import MosquittoProcess, mosquitto_binary
from edge_agent.transports.broker import EmbeddedBroker

# Property tests check behaviour, not speed: no deadline per example and no "generation is
# slow" failure on a loaded machine (CI's two cores run the suite on both at once)
settings.register_profile("suite", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("suite")


@dataclass(frozen=True)
class BrokerInfo:
    host: str
    port: int
    kind: str  # "mosquitto" or "amqtt"


class _EmbeddedInThread:
    """amqtt in its own thread and loop, so sync and async tests can share it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.broker = EmbeddedBroker()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with self.broker:
            self._ready.set()
            await self._stop.wait()

    def start(self) -> None:
        self.thread.start()
        if not self._ready.wait(15):
            raise RuntimeError("embedded broker did not start")

    def stop(self) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(10)


@pytest.fixture(scope="session")
def mqtt_broker() -> Iterator[BrokerInfo]:
    """One broker for the session; tests isolate themselves with a unique topic prefix."""
    if mosquitto_binary():
        with MosquittoProcess() as mosq:
            yield BrokerInfo(mosq.host, mosq.port, "mosquitto")
    else:
        embedded = _EmbeddedInThread()
        embedded.start()
        try:
            yield BrokerInfo(embedded.broker.host, embedded.broker.port, "amqtt")
        finally:
            embedded.stop()


@pytest.fixture
def unique_id() -> str:
    """A short unique id for gateway names and topic prefixes, so tests never cross-talk."""
    return "t" + uuid.uuid4().hex[:10]


# ----- `just test-fast`: the inner loop, without the real parts -------------------------------
# What a test needs that the inner loop leaves out: a broker (Mosquitto or the embedded amqtt),
# the MicroPython interpreter, a browser, or more than a few seconds. Tests that take the
# `mqtt_broker` fixture, or a `village` parametrized "broker", are marked by it; the rest are
# listed here by node id prefix. Under `--fast` a test that starts one of these parts anyway
# fails and names the part (see `_refuse_real_parts`), so this table cannot silently go stale.
NEEDS: dict[str, tuple[str, ...]] = {
    "tests/security/": ("broker",),
    "tests/chaos/": ("broker", "chaos"),
    "tests/hil/": ("micropython", "hil"),
    "tests/powercut/": ("fuse",),  # a FUSE mount in a child process (devtools.powercut)
    "tests/hil/test_flash_powercut.py": ("fuse",),  # the firmware's flash store on the power-cut FS
    "tests/notify/test_sms.py": ("modem",),
    "tests/notify/test_channels.py": ("modem",),
    "tests/notify/test_reports.py": ("modem",),
    "tests/test_mqtt_link.py": ("broker",),
    "tests/test_mqtt_reads.py": ("broker",),
    "tests/centre/test_console_browser.py": ("browser",),
    "tests/centre/test_bench_centre.py": ("broker",),  # the bench's subprocess starts Mosquitto
    "tests/agent/test_drops.py::test_a_full_broker_queue_is_counted_and_alarmed": ("broker",),
    "tests/agent/test_flood_held.py": ("broker",),
    "tests/test_devtools.py::test_launcher": ("broker",),
    "tests/agent/test_homeassistant.py::test_the_generated_south_acl": ("broker",),
    "tests/test_codec.py::test_micropython": ("micropython",),
    "tests/agent/test_demo.py": ("broker",),  # the demo's subprocess runs the embedded broker
    "tests/agent/test_rules_integration.py::test_event_alert_notifies_escalates_and_is_acknowledged[broker]": (
        "broker",
    ),  # the demo's subprocess runs the embedded broker
    # more than a few seconds each (a year of minutes, fuzzing, Numba kernels compiled cold)
    "tests/test_dispatch_replay.py::test_a_year": ("slow",),
    "tests/test_dispatch_replay.py::test_shift_calendars": ("slow",),
    "tests/test_dispatch_replay.py::test_generated_traces": ("slow",),
    "tests/test_lighting_replay.py::test_gateway_levels_equal_twin_tables_over_a_year": ("slow",),
    "tests/test_policy_equivalence.py::test_a_year": ("slow",),
    "tests/test_hostile_input.py::test_payload_decoding": ("slow",),
    "tests/test_hostile_input.py::test_policy_parsing": ("slow",),
    "tests/test_modbus_bus.py::test_bad_replies": ("slow",),
    "tests/twin/test_city.py": ("slow",),
    "tests/twin/test_mmc.py": ("slow",),
    "tests/twin/test_executors.py::test_local_processes_and_dask": ("slow",),
    "tests/twin/test_calibrate.py": ("slow",),
    "tests/twin/test_province.py": ("slow",),
    "tests/twin/test_cli.py": ("slow",),
    "tests/twin/test_reference.py": ("slow",),
    "tests/twin/test_sun.py::test_polar_rule": ("slow",),
    "tests/twin/test_rollout.py::test_cli_rollout_100k": ("slow",),
}
REAL_PROGRAMS = {
    "mosquitto": "broker",
    "micropython": "micropython",
    "chromium": "browser",
    "playwright": "browser",
    "gammu": "modem",
    "fusermount": "fuse",
    "initdb": "postgres",
    "pg_ctl": "postgres",
    "runuser": "postgres",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fast",
        action="store_true",
        help="the inner loop (just test-fast): leave out slow tests and what needs a real part "
        "(broker, micropython, browser, modem, fuse, postgres)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("database_url") == "postgresql":
            item.add_marker("postgres")
        if "pg_url" in getattr(item, "fixturenames", ()) or "pg_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker("postgres")
        if "mqtt_broker" in getattr(item, "fixturenames", ()) or (
            callspec is not None and callspec.params.get("village") == "broker"
        ):
            item.add_marker("broker")
        for prefix, marks in NEEDS.items():
            if item.nodeid.startswith(prefix):
                for mark in marks:
                    item.add_marker(mark)
    if not config.getoption("--fast"):
        return
    left_out = {"broker", "micropython", "browser", "modem", "fuse", "postgres", "slow", "hil", "chaos"}
    kept = [item for item in items if not left_out & {mark.name for mark in item.iter_markers()}]
    config.hook.pytest_deselected(items=[item for item in items if item not in kept])
    items[:] = kept


@pytest.fixture(autouse=True)
def _refuse_real_parts(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under ``--fast``, starting a broker, MicroPython or a browser fails the test by name."""
    if not request.config.getoption("--fast"):
        return
    import os
    import subprocess

    real_popen_init = subprocess.Popen.__init__

    def refusing_init(self: subprocess.Popen[bytes], args: object, *rest: object, **kwargs: object) -> None:
        program = args if isinstance(args, str | bytes | os.PathLike) else next(iter(args), "")  # type: ignore[call-overload]
        name = os.path.basename(os.fsdecode(program)).split()[0] if program else ""
        for real, mark in REAL_PROGRAMS.items():
            if real in name:
                raise RuntimeError(
                    f"{request.node.nodeid} starts {name}: add it to NEEDS in tests/conftest.py as {mark}"
                )
        real_popen_init(self, args, *rest, **kwargs)  # type: ignore[arg-type]

    async def refusing_enter(self: EmbeddedBroker) -> EmbeddedBroker:
        raise RuntimeError(f"{request.node.nodeid} starts the embedded broker: add it to NEEDS in tests/conftest.py")

    monkeypatch.setattr(subprocess.Popen, "__init__", refusing_init)
    monkeypatch.setattr(EmbeddedBroker, "__aenter__", refusing_enter)
