"""HIL fixtures: firmware under the MicroPython unix port on pty buses by default; a real board
when ``--port`` (lamp node) / ``--dongle-port`` are given. Same tests either way; tests that need
fault injection only the emulated line can do (babble, unplug) skip on a real board."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hardware.hil.procs import DONGLE_DIR, FirmwareProcess, micropython_binary, start_lamp_node
from hardware.hil.ptybus import PtyBus


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("hil")
    group.addoption("--port", default=None, help="serial port of a real lamp bus, e.g. /dev/ttyUSB0")
    group.addoption("--units", default="1", help="comma-separated unit ids on the real lamp bus")
    group.addoption("--baud", type=int, default=9600, help="baud rate of the real lamp bus")
    group.addoption("--dongle-port", default=None, help="serial port of a real wearable dongle")


@dataclass
class LampTarget:
    port: str
    units: tuple[int, ...]
    baudrate: int
    line: PtyBus | None  # None on real hardware
    nodes: list[FirmwareProcess]


@dataclass
class DongleTarget:
    port: str
    line: PtyBus | None
    radio: int  # write end of the simulated radio: one text line per packet
    process: FirmwareProcess | None


@pytest.fixture
def lamp_target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LampTarget]:
    port = request.config.getoption("--port")
    if port:
        units = tuple(int(u) for u in str(request.config.getoption("--units")).split(","))
        yield LampTarget(port, units, int(request.config.getoption("--baud")), None, [])
        return
    if micropython_binary() is None:
        pytest.skip("micropython unix port not installed")
    line = PtyBus(tmp_path / "ttyLAMP", echo_to_devices=True).start()
    nodes = [start_lamp_node(u, tmp_path) for u in (1, 2)]
    for node in nodes:
        node.attach(line)
    try:
        yield LampTarget(str(line.link_path), (1, 2), 9600, line, nodes)
    finally:
        line.close()
        for node in nodes:
            node.stop()


@contextlib.contextmanager
def emulated_dongle(tmp_path: Path, *, supervise: bool = False) -> Iterator[DongleTarget]:
    """The dongle firmware under the MicroPython unix port on a pty, its flash the folder
    ``tmp_path/dongle``; ``supervise``: a watchdog reset or power cut (kill -9) reboots it on
    the same line and flash, as a board would."""
    line = PtyBus(tmp_path / "ttyDONGLE", loss=0.0, seed=7).start()
    state = tmp_path / "dongle"
    state.mkdir(exist_ok=True)
    r, w = os.pipe()
    proc = FirmwareProcess(
        DONGLE_DIR,
        ["--state", str(state), f"/dev/fd/{r}", "30"],
        tmp_path / "dongle.log",
        extra_fds=(r,),
        supervise=supervise,
    )
    os.close(r)
    proc.attach(line)
    try:
        yield DongleTarget(str(line.link_path), line, w, proc)
    finally:
        os.close(w)
        line.close()
        proc.stop()


@pytest.fixture
def dongle_target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DongleTarget]:
    if request.config.getoption("--dongle-port"):
        pytest.skip("real dongle: the radio side needs a wearable; run the radio tests manually")
    if micropython_binary() is None:
        pytest.skip("micropython unix port not installed")
    with emulated_dongle(tmp_path) as target:
        yield target


async def dongle_stats(target: DongleTarget, seconds: float = 10.0) -> dict[str, int]:
    """Ask the simulated dongle for its counters (sent, retransmits, acked, dropped)."""
    assert target.process is not None
    before = target.process.log().count("stats ")
    os.write(target.radio, b"stats\n")
    async with asyncio.timeout(seconds):
        while True:
            lines = [x for x in target.process.log().splitlines() if x.startswith("stats ")]
            if len(lines) > before:
                words = lines[-1].split()[1:5]
                return {k: int(v) for k, v in (w.split("=") for w in words)}
            await asyncio.sleep(0.05)


@dataclass
class Node:
    """One supervised lamp node (unit 1) alone on an emulated line, with its own flash."""

    port: str
    line: PtyBus
    proc: FirmwareProcess
    state: Path


@pytest.fixture
def node_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Node]]:
    """Start lamp nodes under a supervisor (power cuts and watchdog resets reboot them on the
    same line). Emulated only: a real board's power and hangs are not ours to switch."""
    if request.config.getoption("--port"):
        pytest.skip("power cuts, hangs and lamp faults are injected on the emulated node only")
    if micropython_binary() is None:
        pytest.skip("micropython unix port not installed")
    started: list[tuple[PtyBus, FirmwareProcess]] = []

    def start(*, rtc: bool = True, config: str | None = None, name: str = "n") -> Node:
        state = tmp_path / name
        state.mkdir(exist_ok=True)
        if config is not None:
            (state / "node.json").write_text(config)
        line = PtyBus(tmp_path / f"tty{name}", echo_to_devices=True).start()
        proc = start_lamp_node(1, tmp_path, rtc=rtc, state_dir=state)
        proc.attach(line)
        started.append((line, proc))
        return Node(str(line.link_path), line, proc, state)

    try:
        yield start
    finally:
        for line, proc in started:
            line.close()
            proc.stop()
