"""ModbusLampBus against emulated lamp nodes (the firmware's own classes under CPython) on a
real pty, plus property tests of the response handling. No mocks of what can be real."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import os
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.codec import registers as regmap
from edge_agent.codec.crc import crc16_modbus
from edge_agent.errors import ProtocolError, TransportError
from edge_agent.transports.modbus_bus import BusSettings, ModbusLampBus
from edge_agent.transports.modbus_values import LampProgram, LampReading, NodeStatus, decode_reading
from hardware.firmware.lamp_node import regs as fw_regs
from hardware.hil.emulated import EmulatedLampNode
from hardware.hil.ptybus import PtyBus


def test_firmware_register_copy_agrees_with_the_contract() -> None:
    shared = {n: v for n, v in vars(regmap).items() if n.isupper() and isinstance(v, int)}
    firmware = {n: v for n, v in vars(fw_regs).items() if n.isupper() and isinstance(v, int)}
    common = shared.keys() & firmware.keys()
    assert len(common) >= 35
    assert {n: firmware[n] for n in common} == {n: shared[n] for n in common}
    assert round(regmap.STANDBY_POWER_W * 10) == fw_regs.STANDBY_DW
    assert round(regmap.RATED_POWER_W * 10) == fw_regs.RATED_DW
    assert round(regmap.NOMINAL_VOLTAGE_V * 10) == fw_regs.VOLTAGE_DV
    missing = {n for n in shared if n.startswith(("HR_", "IR_", "FAULT_"))} - firmware.keys()
    assert missing == set()


@given(st.lists(st.integers(0, 0xFFFF), min_size=regmap.IR_COUNT, max_size=regmap.IR_COUNT))
def test_decode_reading_accepts_any_full_block(regs: list[int]) -> None:
    r = decode_reading(3, regs)
    assert r.unit == 3
    assert r.power_w == regs[regmap.IR_POWER] / 10
    assert r.energy_wh == regs[regmap.IR_ENERGY_HI] * 65536 + regs[regmap.IR_ENERGY_LO]


@given(st.lists(st.integers(0, 0xFFFF), max_size=40).filter(lambda x: len(x) != regmap.IR_COUNT))
def test_decode_reading_refuses_wrong_counts(regs: list[int]) -> None:
    with pytest.raises(ProtocolError) as err:
        decode_reading(3, regs)
    assert err.value.reason == "bad_count"


def test_program_registers_and_validation() -> None:
    p = LampProgram(version=9, steps=((1080, 100), (1380, 50)))
    assert p.to_registers() == [9, 2, 1080, 100, 1380, 50]
    with pytest.raises(ProtocolError):
        LampProgram(1, ((1440, 10),)).to_registers()
    with pytest.raises(ProtocolError):
        LampProgram(1, tuple((i, 10) for i in range(9))).to_registers()


# --- on a pty ---------------------------------------------------------------------------------


@dataclasses.dataclass
class Line:
    bus: PtyBus
    nodes: dict[int, EmulatedLampNode]
    log: list[tuple[float, str, bytes]]

    def settings(self, **kw: Any) -> BusSettings:
        base = BusSettings(
            port=str(self.bus.link_path),
            baudrate=115200,
            units=tuple(self.nodes),
            timeout=0.3,
            retries=1,
            offline_after=2,
            poll_interval=0,
        )
        return dataclasses.replace(base, **kw)


def make_line(tmp_path: Path, units: tuple[int, ...], **kw: Any) -> Line:
    bus = PtyBus(tmp_path / "ttyBUS", **kw)
    log: list[tuple[float, str, bytes]] = []
    lock = threading.Lock()

    def tap(direction: str, data: bytes) -> None:
        with lock:
            log.append((time.monotonic(), direction, data))

    bus.tap = tap
    nodes = {u: EmulatedLampNode(u) for u in units}
    for n in nodes.values():
        bus.add_inprocess_device(n)
    bus.start()
    return Line(bus, nodes, log)


@pytest.fixture
def line(tmp_path: Path) -> Iterator[Line]:
    ln = make_line(tmp_path, (1, 2, 3, 4))
    try:
        yield ln
    finally:
        ln.bus.close()


async def test_set_level_and_poll(line: Line) -> None:
    async with ModbusLampBus(line.settings()) as bus:
        await bus.set_level_and_on(2, 60, True)
        r = await bus.poll(2)
        assert (r.level, r.on) == (60, True)
        assert r.power_w == pytest.approx(regmap.expected_power_w(60, True))
        assert line.nodes[2].pwm.levels[-1] == 60
        assert await bus.read_holding(2, regmap.HR_LEVEL, 2) == [60, 1]


async def test_one_request_in_flight_and_inter_frame_delay(line: Line) -> None:
    gap = 0.02
    async with ModbusLampBus(line.settings(inter_frame_delay=gap)) as bus:
        await asyncio.gather(
            *(bus.set_level(u, 10 * u) for u in line.nodes),
            *(bus.poll(u) for u in line.nodes for _ in range(3)),
        )
    directions = [d for _, d, _ in line.log]
    # requests and replies strictly alternate: never two requests without a reply between
    merged = [d for i, d in enumerate(directions) if i == 0 or directions[i - 1] != d]
    assert merged.count("from_agent") == 16
    assert all(a != b for a, b in itertools.pairwise(merged))
    # every request waited at least the inter-frame delay after the previous reply
    times = [(t, d) for t, d, _ in line.log]
    for (t0, d0), (t1, d1) in itertools.pairwise(times):
        if d0 == "to_agent" and d1 == "from_agent":
            assert t1 - t0 >= gap * 0.9


async def test_the_silence_is_counted_from_the_reply_not_added_after_each_job(line: Line) -> None:
    """The inter-frame delay runs from the reply's end: the master's own work after a reply
    counts towards it, and the event loop's timer slack is not added to every gap."""
    gap = 0.02
    async with ModbusLampBus(line.settings(inter_frame_delay=gap)) as bus:
        await bus.poll(1)
        line.log.clear()
        for _ in range(5):
            await bus.poll_all()
    times = [(t, d) for t, d, _ in line.log]
    gaps = [t1 - t0 for (t0, d0), (t1, d1) in itertools.pairwise(times) if d0 == "to_agent" and d1 == "from_agent"]
    assert len(gaps) == 19
    assert min(gaps) >= gap * 0.9, "never shorter than the delay"
    assert statistics.median(gaps) < gap + 0.008, "no timer slack piled on top of the delay"


def _gaps_after(log: list[tuple[float, str, bytes]], size: int) -> list[tuple[str, float]]:
    """For every chunk of ``size`` bytes sent to the master: what the line carried next, after
    how long."""
    return [
        (d1, t1 - t0) for (t0, d0, b0), (t1, d1, _) in itertools.pairwise(log) if d0 == "to_agent" and len(b0) == size
    ]


async def test_a_replys_trailing_bytes_restart_the_silence(tmp_path: Path) -> None:
    """A node that keeps sending after its reply's CRC (four more bytes straight behind the
    frame, 4.2 ms at 9,600 baud): the next request waits the whole silence after the last of
    them, not after the frame. (A 20 ms silence, so that a relay thread late by a few ms on a
    loaded machine cannot make a request look early.)"""
    ln = make_line(tmp_path, (1,), baudrate=9600)

    def tap(direction: str, data: bytes) -> None:
        ln.log.append((time.monotonic(), direction, data))
        if direction == "to_agent" and data[:2] == b"\x01\x04":  # a reply: queue its tail behind it
            for _ in range(4):  # byte by byte, as a UART hands them over
                ln.bus.babble(b"\x00")

    ln.bus.tap = tap
    settings = ln.settings(baudrate=9600, inter_frame_delay=0.02)
    try:
        async with ModbusLampBus(settings) as bus:
            for _ in range(5):
                assert isinstance(await bus.poll(1), LampReading)
    finally:
        ln.bus.close()
    kinds = "".join("r" if d == "to_agent" and len(b) > 1 else "t" if d == "to_agent" else "Q" for _, d, b in ln.log)
    # every reply was followed by its whole tail before the next request: none went out during it
    assert kinds.startswith("Qrtttt" * 4 + "Qr"), kinds  # (the last tail may come after closing)
    times = [(t, d) for t, d, _ in ln.log]
    assert all(
        t1 - t0 >= settings.frame_gap()
        for (t0, d0), (t1, d1) in itertools.pairwise(times)
        if (d0, d1) == ("to_agent", "from_agent")
    )


async def test_a_stray_byte_during_the_silence_restarts_it(tmp_path: Path) -> None:
    """Noise (or a late byte) on the line 8 ms into a 20 ms silence: the next request waits a full
    20 ms after it."""
    ln = make_line(tmp_path, (1,), baudrate=115200)
    gap = 0.02
    timers: list[threading.Timer] = []

    def tap(direction: str, data: bytes) -> None:
        ln.log.append((time.monotonic(), direction, data))
        if direction == "to_agent" and data[:2] == b"\x01\x04":
            timers.append(threading.Timer(0.008, ln.bus.babble, (b"\x00",)))
            timers[-1].start()

    ln.bus.tap = tap
    try:
        async with ModbusLampBus(ln.settings(inter_frame_delay=gap, retries=2)) as bus:
            for _ in range(5):
                await bus.poll(1)
                await asyncio.sleep(0)
    finally:
        for t in timers:
            t.join()
        ln.bus.close()
    after_stray = _gaps_after(ln.log, 1)
    in_gaps = [dt for d, dt in after_stray if d == "from_agent"]
    assert len(in_gaps) >= 3, after_stray  # (a stray byte can come late on a loaded machine)
    assert min(in_gaps) >= gap, after_stray
    # and every request, whatever came before it, left the whole silence
    times = [(t, d) for t, d, _ in ln.log]
    assert all(
        t1 - t0 >= gap for (t0, d0), (t1, d1) in itertools.pairwise(times) if (d0, d1) == ("to_agent", "from_agent")
    )


def _request_gaps(log: list[tuple[float, str, bytes]]) -> list[float]:
    """Timed from the other end of the pty, by the relay thread's clock readings (not the bus's
    own): from the moment a reply's last byte is handed to the master (read just before the
    write) to the moment the master's next request is read (just after the read). The relay's
    own lateness can only lengthen what this sees, never shorten it."""
    return [t1 - t0 for (t0, d0, _), (t1, d1, _) in itertools.pairwise(log) if (d0, d1) == ("to_agent", "from_agent")]


async def test_the_silence_before_a_request_is_never_shorter_than_the_gap(tmp_path: Path) -> None:
    """At 115,200 baud with the default gap (1.75 ms, the Modbus t3.5): over 200 transactions
    (polls and commands, several nodes) the line is never quiet for less than the gap before a
    request, timed at the other end of the pty. (How little more than the gap it waits is a
    speed figure: `python -m devtools.bench_serial`.)"""
    ln = make_line(tmp_path, (1, 2, 3, 4), baudrate=115200)
    settings = ln.settings()
    gap = settings.frame_gap()
    assert gap == pytest.approx(0.00175)
    try:
        async with ModbusLampBus(settings) as bus:
            await bus.poll_all()
            ln.log.clear()
            for i in range(40):
                await bus.poll_all()
                await bus.set_level(1 + i % 4, i)
    finally:
        ln.bus.close()
    gaps = _request_gaps(ln.log)
    assert len(gaps) == 40 * 5 - 1
    assert min(gaps) >= gap, f"{1000 * min(gaps):.3f} ms < {1000 * gap:.3f} ms"


def _open_fds() -> list[str]:
    """What each of this process's fds points at (a pty, a socket, anon_inode:[timerfd], ...)."""
    out = []
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # (the fd listdir itself used is closed by now)
            out.append(os.readlink(f"/proc/self/fd/{name}"))
    return sorted(out)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc (Linux)")
async def test_the_bus_closes_every_fd_it_opened_and_opens_the_port_again(line: Line) -> None:
    """Open, use and close the bus three times on the same port (as the power-cut tests do):
    each time it runs on one timerfd of its own, and after each close this process holds
    exactly the fds it held before (the port's exclusive lock goes with its fd: a leaked one
    and the next open fails)."""
    before = _open_fds()
    for level in (10, 20, 30):
        async with ModbusLampBus(line.settings()) as bus:
            await bus.set_level(1, level)
            assert (await bus.poll(1)).level == level
            opened = _open_fds()
            assert opened.count("anon_inode:[timerfd]") == before.count("anon_inode:[timerfd]") + 1, opened
        assert _open_fds() == before
    with pytest.raises(TransportError):  # and an open that fails leaves nothing open either
        async with ModbusLampBus(dataclasses.replace(line.settings(), port=str(line.bus.link_path) + "-gone")):
            pass
    assert _open_fds() == before


async def test_commands_overtake_queued_polls(line: Line) -> None:
    async with ModbusLampBus(line.settings()) as bus:
        polls = [asyncio.ensure_future(bus.poll(1)) for _ in range(30)]
        await asyncio.sleep(0)
        await bus.set_level(1, 77)
        assert sum(p.done() for p in polls) < 10
        await asyncio.gather(*polls)


async def test_staggered_background_polls_emit_readings(line: Line) -> None:
    async with ModbusLampBus(line.settings(poll_interval=0.4)) as bus:
        seen: list[int] = []
        async with asyncio.timeout(20):
            async for ev in bus.events():
                if isinstance(ev, LampReading):
                    seen.append(ev.unit)
                if len(seen) == 8:
                    break
    assert seen[:4] == [1, 2, 3, 4]  # round robin, one node per interval/4
    assert seen[4:] == [1, 2, 3, 4]
    reqs = [t for t, d, _ in line.log if d == "from_agent"]
    spacing = [b - a for a, b in itertools.pairwise(reqs)]
    assert min(spacing) >= 0.05  # spread over the interval, not a burst of 4


async def test_node_goes_offline_and_comes_back(line: Line) -> None:
    async with ModbusLampBus(line.settings(timeout=0.15, retries=0)) as bus:
        events = bus.events()
        line.nodes[3].mute = True
        for _ in range(2):
            with pytest.raises(TransportError):
                await bus.poll(3)
        assert not bus.online(3)
        line.nodes[3].mute = False
        await bus.poll(3)
        assert bus.online(3)
        statuses: list[tuple[int, bool]] = []
        async with asyncio.timeout(5):
            while len(statuses) < 2:
                ev = await anext(events)
                if isinstance(ev, NodeStatus):
                    statuses.append((ev.unit, ev.online))
        assert statuses == [(3, False), (3, True)]
        assert bus.stats.failures == 2


async def test_exception_reply_is_a_protocol_error_and_keeps_node_online(line: Line) -> None:
    async with ModbusLampBus(line.settings()) as bus:
        with pytest.raises(ProtocolError) as err:
            await bus.read_holding(1, 200, 2)
        assert err.value.reason == "exception_response"
        assert bus.online(1)


async def test_an_exception_reply_names_its_exception_code(line: Line) -> None:
    async with ModbusLampBus(line.settings()) as bus:
        with pytest.raises(ProtocolError) as err:
            await bus.read_holding(1, 200, 2)  # the node has no register 200: code 2
        assert err.value.reason == "exception_response"
        assert "code 2 (illegal data address)" in str(err.value)


async def test_a_reply_with_another_function_code_is_not_taken_as_data(line: Line) -> None:
    """The node answers a poll (function 4, input registers) with a well-formed function-3 reply
    of the right length and CRC: a reading made of the wrong registers must not be accepted."""
    node = line.nodes[1]

    def as_function_3(reply: bytes) -> bytes:
        return _reframe(bytes([reply[0], 3]) + reply[2:-2])

    async with ModbusLampBus(line.settings(retries=0)) as bus:
        node.reply_override = as_function_3
        try:
            with pytest.raises((ProtocolError, TransportError)) as err:
                await bus.poll(1)
        finally:
            node.reply_override = None
        if isinstance(err.value, ProtocolError):
            assert err.value.reason == "wrong_function" and "function 3 to function 4" in str(err.value)
        assert isinstance(await bus.poll(1), LampReading)


async def test_missing_port_is_a_transport_error(tmp_path: Path) -> None:
    with pytest.raises(TransportError):
        async with ModbusLampBus(BusSettings(port=str(tmp_path / "nope"), timeout=0.2)):
            pass


async def test_fallback_program_runs_on_the_node_clock(line: Line) -> None:
    prog = LampProgram(3, ((0, 20), (12 * 60, 70)))
    async with ModbusLampBus(line.settings()) as bus:
        await bus.write_program(1, prog)
        await bus.sync_clock(1, 11 * 3600 + 59 * 60 + 50, rate=100)
        await bus.set_silence_timeout(1, 5)
        await asyncio.sleep(0.3)  # 30 node-seconds: silent past the timeout, clock past noon
        r = await bus.poll(1)
        assert r.fallback
        assert r.level == 70
        assert r.clock_s >= 12 * 3600


# --- bad replies: property test over what the master accepts -----------------------------------


def _reframe(body: bytes) -> bytes:
    c = crc16_modbus(body)
    return body + bytes([c & 0xFF, c >> 8])


def _mutations() -> st.SearchStrategy[tuple[str, int | bytes]]:
    return st.one_of(
        st.binary(max_size=300).map(lambda g: ("garbage", g)),
        st.integers(1, 30).map(lambda k: ("truncate", k)),
        st.integers(0, 40).map(lambda i: ("flip", i)),
        st.integers(0, 60).map(lambda n: ("count", n)),
        st.integers(2, 247).map(lambda u: ("unit", u)),
        st.just(("oversized", 0)),
        st.just(("exception", 0)),
    )


def _apply(mutation: tuple[str, int | bytes], reply: bytes) -> bytes:
    kind, arg = mutation
    if kind == "garbage":
        assert isinstance(arg, bytes)
        return arg
    assert isinstance(arg, int)
    if kind == "truncate":
        return reply[: max(0, len(reply) - arg)]
    if kind == "flip":
        b = bytearray(reply)
        b[arg % len(b)] ^= 0x5A
        return bytes(b)
    if kind == "count":  # a well-formed frame with a wrong byte count (valid CRC)
        data = bytes(range(arg))
        return _reframe(bytes([reply[0], 4, arg]) + data)
    if kind == "unit":
        return _reframe(bytes([arg]) + reply[1:-2])
    if kind == "oversized":
        return _reframe(bytes([reply[0], 4, 250]) + bytes(250))
    return _reframe(bytes([reply[0], 0x84, 4]))


class _LoopThread:
    """One event loop in a thread holding one open bus, so a sync hypothesis test can use it."""

    def __init__(self, settings_: BusSettings) -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self.bus: ModbusLampBus | None = None
        self._settings = settings_
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._main(),))
        self.thread.start()
        assert self._ready.wait(10)

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with ModbusLampBus(self._settings) as bus:
            self.bus = bus
            self._ready.set()
            await self._stop.wait()

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def close(self) -> None:
        assert self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def bad_reply_rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Line, _LoopThread]]:
    ln = make_line(tmp_path_factory.mktemp("bad"), (1,))
    rig = _LoopThread(ln.settings(timeout=0.12, retries=0, offline_after=1000))
    try:
        yield ln, rig
    finally:
        rig.close()
        ln.bus.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_mutations())
def test_bad_replies_give_only_our_errors_and_the_next_poll_works(
    bad_reply_rig: tuple[Line, _LoopThread], mutation: tuple[str, int | bytes]
) -> None:
    ln, rig = bad_reply_rig
    node = ln.nodes[1]
    assert rig.bus is not None
    node.reply_override = lambda reply: _apply(mutation, reply)
    try:
        result = rig.run(rig.bus.poll(1))
    except (TransportError, ProtocolError):
        pass
    else:  # a mutation can leave a valid reply (e.g. garbage that is a frame): it must decode
        assert isinstance(result, LampReading)
    node.reply_override = None
    # The bus recovers at once: a valid reply parses again. (A second try is allowed only for
    # a loaded CI machine, where the short timeout can fire before the reply is read.)
    outcomes: list[object] = []
    for _ in range(2):
        try:
            outcomes.append(rig.run(rig.bus.poll(1)))
            break
        except TransportError as exc:
            outcomes.append(exc)
    assert isinstance(outcomes[-1], LampReading), outcomes


async def test_bus_recovers_when_the_port_disappears_and_returns(line: Line) -> None:
    async with ModbusLampBus(line.settings(timeout=0.2, retries=0)) as bus:
        await bus.set_level(1, 25)
        line.bus.unplug()
        with pytest.raises(TransportError):
            await bus.poll(1)
        line.bus.replug()
        async with asyncio.timeout(20):  # pymodbus reopens the port with capped backoff
            while True:
                try:
                    reading = await bus.poll(1)
                    break
                except TransportError:
                    await asyncio.sleep(0.1)
        assert reading.level == 25
        assert bus.online(1)
