"""Modbus RTU master for a street cabinet's lamp bus: one serial port, many lamp nodes.

Owns: the bus scheduler (one request in flight, inter-frame delay, staggered polls, timeouts and
retries, online/offline tracking, commands ahead of polls), its settings and counters, and
converting pymodbus/pyserial exceptions into ``TransportError`` / ``ProtocolError`` at this
boundary. What the register blocks mean (readings, programs): edge_agent/transports/modbus_values.py.
Must not import: edge_agent.engine, edge_agent.policy, edge_agent.agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient
from pymodbus.exceptions import ModbusException

from edge_agent.codec import registers as regmap
from edge_agent.errors import ProtocolError, TransportError
from edge_agent.histogram import BUS_BUCKETS_S, LatencyHistogram
from edge_agent.transports.deadline_timer import DeadlineTimer
from edge_agent.transports.modbus_values import LampProgram, LampReading, NodeStatus, decode_reading

__all__ = [
    "BusSettings",
    "BusStats",
    "ModbusLampBus",
]

log = logging.getLogger(__name__)

# Modbus exception codes (Modbus Application Protocol v1.1b3, section 7)
EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}

PRIORITY_COMMAND = 0  # dim level, on/off, program writes
PRIORITY_CLOCK = 1  # clock sync
PRIORITY_POLL = 2  # routine readings


@dataclass(frozen=True)
class BusSettings:
    """Everything that configures one bus. Copy with ``dataclasses.replace``."""

    port: str
    baudrate: int = 9600
    units: tuple[int, ...] = ()
    inter_frame_delay: float | None = None  # None: 3.5 character times (>= 1.75 ms)
    timeout: float = 0.5  # per request attempt
    retries: int = 2  # extra attempts after the first
    offline_after: int = 3  # consecutive failed requests before a node is offline
    poll_interval: float = 5.0  # each node polled once per interval, staggered across nodes
    parity: str = "N"
    stopbits: int = 1
    events_maxsize: int = 1024

    def frame_gap(self) -> float:
        if self.inter_frame_delay is not None:
            return self.inter_frame_delay
        return max(3.5 * 11 / self.baudrate, 0.00175)


@dataclass
class BusStats:
    requests: int = 0
    failures: int = 0
    retries: int = 0
    protocol_errors: dict[str, int] = field(default_factory=dict)
    # answered polls, request to reading (retries included); failed polls are in ``failures``
    poll_seconds: LatencyHistogram = field(default_factory=lambda: LatencyHistogram(BUS_BUCKETS_S))


@dataclass
class _Node:
    unit: int
    online: bool = True
    failures: int = 0
    poll_queued: bool = False
    last: LampReading | None = None


_Op = Callable[[AsyncModbusSerialClient], Awaitable[Any]]


@dataclass
class _Job:
    unit: int
    name: str
    op: _Op
    future: asyncio.Future[Any] | None


class ModbusLampBus:
    """The master of one RS-485 lamp bus. Use as ``async with ModbusLampBus(settings) as bus``.

    Commands (``set_level``, ``set_on``, ``write_program``, ``sync_clock``) wait for the node's
    reply and raise ``TransportError`` (no answer after retries) or ``ProtocolError`` (an
    exception reply or a malformed one). Readings and online/offline changes arrive through
    ``events()``; ``poll_all()`` polls every node now and returns the readings.
    """

    def __init__(self, settings: BusSettings) -> None:
        self.settings = settings
        self.stats = BusStats()
        self._nodes = {u: _Node(u) for u in settings.units}
        self._queue: asyncio.PriorityQueue[tuple[int, int, _Job]] = asyncio.PriorityQueue()
        self._order = itertools.count()
        self._events: asyncio.Queue[LampReading | NodeStatus] = asyncio.Queue(settings.events_maxsize)
        self._client: AsyncModbusSerialClient | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._polling = settings.poll_interval > 0
        self._gap = settings.frame_gap()
        self._quiet_since = -float("inf")  # when bytes last came in (or an attempt gave up)
        self._timer = DeadlineTimer()  # the silence's timer: a timerfd while the bus is open

    # --- lifecycle -----------------------------------------------------------------------------
    async def __aenter__(self) -> ModbusLampBus:
        s = self.settings
        self._client = AsyncModbusSerialClient(
            s.port,
            framer=FramerType.RTU,
            baudrate=s.baudrate,
            parity=s.parity,
            stopbits=s.stopbits,
            timeout=s.timeout,
            retries=0,  # retries are ours: the scheduler decides what goes next
            reconnect_delay=0.1,
            reconnect_delay_max=2.0,
            trace_packet=self._trace_packet,
        )
        try:
            connected = await self._client.connect()
        except Exception as exc:  # pyserial raises several kinds while opening
            raise TransportError(f"{s.port}: cannot open ({exc})") from None
        if not connected:
            raise TransportError(f"{s.port}: cannot open")
        self._timer.open()  # after the port: an open that fails leaves no fd behind
        self._tasks.append(asyncio.create_task(self._worker(), name="modbus-worker"))
        if self._polling and self._nodes:
            self._tasks.append(asyncio.create_task(self._poll_ticker(), name="modbus-polls"))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        while not self._queue.empty():
            _, _, job = self._queue.get_nowait()
            if job.future is not None and not job.future.done():
                job.future.set_exception(TransportError("bus closed"))
        self._timer.close()
        if self._client is not None:
            self._client.close()
            self._client = None

    # --- public API ----------------------------------------------------------------------------
    def online(self, unit: int) -> bool:
        return self._node(unit).online

    def latest(self, unit: int) -> LampReading | None:
        return self._node(unit).last

    async def events(self) -> AsyncIterator[LampReading | NodeStatus]:
        """Readings and online/offline changes, in the order they happened."""
        while True:
            yield await self._events.get()

    async def set_level(self, unit: int, level: int) -> None:
        if not 0 <= level <= 100:
            raise ValueError(f"level {level} outside 0..100")
        await self._command(unit, "set_level", self._write_op(unit, regmap.HR_LEVEL, [level]))

    async def set_on(self, unit: int, on: bool) -> None:
        await self._command(unit, "set_on", self._write_op(unit, regmap.HR_ON, [int(on)]))

    async def set_level_and_on(self, unit: int, level: int, on: bool) -> None:
        """Level and on/off in one FC 16 write (registers 0 and 1 are adjacent on purpose)."""
        if not 0 <= level <= 100:
            raise ValueError(f"level {level} outside 0..100")
        await self._command(unit, "set", self._write_op(unit, regmap.HR_LEVEL, [level, int(on)]))

    async def write_program(self, unit: int, program: LampProgram) -> None:
        await self._command(unit, "program", self._write_op(unit, regmap.HR_PROGRAM_VERSION, program.to_registers()))

    async def set_silence_timeout(self, unit: int, seconds: int) -> None:
        await self._command(unit, "silence", self._write_op(unit, regmap.HR_SILENCE_TIMEOUT, [seconds]))

    async def sync_clock(self, unit: int, seconds_since_2000: int, rate: int = 1) -> None:
        """Set the node clock (local time) and its speed factor (1 = real time)."""
        s = seconds_since_2000 & 0xFFFFFFFF
        op = self._write_op(unit, regmap.HR_CLOCK_HI, [s >> 16, s & 0xFFFF, rate])
        await self._command(unit, "clock", op, PRIORITY_CLOCK)

    async def read_holding(self, unit: int, address: int, count: int) -> list[int]:
        return list(await self._command(unit, "read_hr", self._read_op(unit, address, count, 3)))

    async def poll(self, unit: int) -> LampReading:
        """Poll one node now (at poll priority) and return its reading."""
        fut: asyncio.Future[LampReading] = asyncio.get_running_loop().create_future()
        self._enqueue(PRIORITY_POLL, self._poll_job(unit, fut))
        return await fut

    async def poll_all(self) -> dict[int, LampReading | TransportError | ProtocolError]:
        """Poll every node once (one full polling cycle); failures are returned, not raised."""
        results = await asyncio.gather(*(self.poll(u) for u in self._nodes), return_exceptions=True)
        out: dict[int, LampReading | TransportError | ProtocolError] = {}
        for unit, res in zip(self._nodes, results, strict=True):
            if isinstance(res, LampReading | TransportError | ProtocolError):
                out[unit] = res
            elif isinstance(res, BaseException):
                raise res
        return out

    # --- scheduling ----------------------------------------------------------------------------
    def _node(self, unit: int) -> _Node:
        node = self._nodes.get(unit)
        if node is None:
            node = self._nodes[unit] = _Node(unit)
        return node

    def _enqueue(self, priority: int, job: _Job) -> None:
        self._queue.put_nowait((priority, next(self._order), job))

    async def _command(self, unit: int, name: str, op: _Op, priority: int = PRIORITY_COMMAND) -> Any:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._enqueue(priority, _Job(unit, name, op, fut))
        return await fut

    def _poll_job(self, unit: int, fut: asyncio.Future[LampReading] | None) -> _Job:
        return _Job(unit, "poll", self._read_op(unit, 0, regmap.IR_COUNT, 4), fut)

    async def _poll_ticker(self) -> None:
        """Stagger: one node every poll_interval / n, round robin."""
        units = list(self._nodes)
        step = self.settings.poll_interval / max(len(units), 1)
        for unit in itertools.cycle(units):
            node = self._nodes[unit]
            if not node.poll_queued:
                node.poll_queued = True
                self._enqueue(PRIORITY_POLL, self._poll_job(unit, None))
            await asyncio.sleep(step)

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        """pymodbus calls this as bytes go out and as each chunk of them comes in, before it
        parses them: the line was last busy now. Any bytes count (a reply's trailing bytes, a
        stray byte or another node's reply during the silence): they restart the silence."""
        if not sending:
            self._quiet_since = time.monotonic()
        return data

    async def _silence(self) -> None:
        """Wait until the line has been quiet for the inter-frame delay (3.5 characters).

        The silence is counted from when the last bytes came in, so the time spent decoding a
        reply and picking the next job counts towards it. The wait is a timer at the absolute
        deadline (``DeadlineTimer``: a timerfd on the monotonic clock, so it ends within tens of
        microseconds after it, where the loop's own timers end up to 1 ms late: epoll rounds
        them up), then one yield: the loop polls the port once more, so bytes that came in up
        to then are read (and restart the silence) before the request goes. The clock is read
        again after both: the request never goes before the whole gap has passed.
        Already quiet long enough (the worker was idle, or waited just before): no wait, as
        the loop has been reading the port all along.
        """
        while (deadline := self._quiet_since + self._gap) > time.monotonic():
            await self._timer.wait_until(deadline)
            await asyncio.sleep(0)  # read what came in meanwhile, then look at the clock again

    async def _worker(self) -> None:
        while True:
            await self._silence()  # before taking a job: a command queued meanwhile goes first
            _, _, job = await self._queue.get()
            if job.future is not None and job.future.done():  # caller gave up
                continue
            try:
                result = await self._run_job(job)
            except (TransportError, ProtocolError) as exc:
                if job.future is not None and not job.future.done():
                    job.future.set_exception(exc)
            except Exception as exc:  # a bug below us must not stop the bus for every lamp
                log.exception("unit %s %s failed unexpectedly", job.unit, job.name)
                if job.future is not None and not job.future.done():
                    job.future.set_exception(TransportError(f"unit {job.unit}: {exc!r}"))
            else:
                if job.future is not None and not job.future.done():
                    job.future.set_result(result)

    async def _run_job(self, job: _Job) -> Any:
        node = self._node(job.unit)
        if job.name == "poll":
            node.poll_queued = False
        attempts = 1 + self.settings.retries
        last: TransportError | ProtocolError = TransportError("no attempt")
        started = time.monotonic()
        for attempt in range(attempts):
            if attempt:
                self.stats.retries += 1
            await self._silence()
            self.stats.requests += 1
            try:
                result = await self._attempt(job)
            except ProtocolError as exc:
                self.stats.protocol_errors[exc.reason] = self.stats.protocol_errors.get(exc.reason, 0) + 1
                if exc.reason == "exception_response":
                    self._mark_answered(node)  # the node is alive; the request was wrong
                    raise
                last = exc
                continue
            except TransportError as exc:
                last = exc
                continue
            self._mark_answered(node)
            if isinstance(result, LampReading):
                self.stats.poll_seconds.observe(time.monotonic() - started)
                node.last = result
                self._emit(result)
            return result
        self.stats.failures += 1
        self._mark_failed(node, last)
        raise last

    async def _attempt(self, job: _Job) -> Any:
        client = self._client
        if client is None:
            raise TransportError("bus not open")
        done = False
        try:
            result = await job.op(client)
            done = True  # the reply's bytes were timed as they came in (_trace_packet)
        except (ProtocolError, TransportError):
            raise
        except ModbusException as exc:
            raise TransportError(f"unit {job.unit} {job.name}: {exc}") from None
        except (TimeoutError, OSError, ValueError) as exc:
            raise TransportError(f"unit {job.unit} {job.name}: {exc!r}") from None
        finally:
            if not done:  # no reply, or a bad one: count the silence from giving up
                self._quiet_since = max(self._quiet_since, time.monotonic())
        return result

    def _mark_answered(self, node: _Node) -> None:
        node.failures = 0
        if not node.online:
            node.online = True
            self._emit(NodeStatus(node.unit, True, "answered"))

    def _mark_failed(self, node: _Node, exc: Exception) -> None:
        node.failures += 1
        if node.online and node.failures >= self.settings.offline_after:
            node.online = False
            self._emit(NodeStatus(node.unit, False, str(exc)))

    def _emit(self, event: LampReading | NodeStatus) -> None:
        if self._events.full():
            self._events.get_nowait()  # keep the newest; consumers that lag lose old readings
        self._events.put_nowait(event)

    # --- operations (run by the worker only) -------------------------------------------------
    @staticmethod
    def _check(unit: int, response: Any, count: int | None, fc: int) -> list[int]:
        """The registers of a reply to a request of function code ``fc``: only a reply with that
        code is data; an exception reply (``fc | 0x80``) is ``exception_response`` with its
        exception named; another code is ``wrong_function``."""
        if response is None:
            raise TransportError(f"unit {unit}: no response")
        got = int(getattr(response, "function_code", -1))
        if response.isError() or got == fc | 0x80:
            code = int(getattr(response, "exception_code", 0))
            name = EXCEPTION_NAMES.get(code, "unknown exception")
            raise ProtocolError(
                "exception_response", where=f"unit {unit}", detail=f"function {fc}: code {code} ({name})"
            )
        if got != fc:
            raise ProtocolError(
                "wrong_function", where=f"unit {unit}", detail=f"reply of function {got} to function {fc}"
            )
        if count is None:
            return []
        regs = list(getattr(response, "registers", []))
        if len(regs) != count:
            raise ProtocolError("bad_count", where=f"unit {unit}", detail=f"{len(regs)} != {count}")
        return regs

    def _read_op(self, unit: int, address: int, count: int, fc: int) -> _Op:
        async def op(client: AsyncModbusSerialClient) -> Any:
            if fc == 4:
                rr = await client.read_input_registers(address, count=count, device_id=unit)
                return decode_reading(unit, self._check(unit, rr, count, 4))
            rr = await client.read_holding_registers(address, count=count, device_id=unit)
            return self._check(unit, rr, count, 3)

        return op

    def _write_op(self, unit: int, address: int, values: list[int]) -> _Op:
        async def op(client: AsyncModbusSerialClient) -> Any:
            if len(values) == 1:
                rr, fc = await client.write_register(address, values[0], device_id=unit), 6
            else:
                rr, fc = await client.write_registers(address, values, device_id=unit), 16
            self._check(unit, rr, None, fc)
            return None

        return op
