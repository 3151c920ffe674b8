"""A cellular modem's AT command port: commands out, their answers in, unsolicited codes aside.

Owns: ``AtPort`` (open the serial port with pyserial, non-blocking, read through the event
loop as edge_agent/transports/dongle_link.py does; set echo off ``ATE0`` and verbose errors
``AT+CMEE=2``; send one command and collect its information lines up to its final result code)
and what the codes mean for a person (``meaning``). Unsolicited result codes (``RING``,
``+CLIP``, ``+CREG``, ``NO CARRIER`` ...) may come at any time, before or inside an answer:
they are skipped, and the last call-ending one is kept in ``ended``. One exchange at a time:
the caller serialises (edge_agent/notify/ring.py holds a lock).
Must not import: the agent, the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re

import serial

from edge_agent.errors import TransportError

CALL_ENDS = ("NO CARRIER", "BUSY", "NO ANSWER", "NO DIALTONE")
MEANING = {
    "NO CARRIER": "the call did not go through",
    "BUSY": "the line was busy or the call was rejected",
    "NO ANSWER": "nobody answered",
    "NO DIALTONE": "no dial tone: the modem has no network",
    "ERROR": "the modem refused the command",
}
GONE = "\0"  # put in the line queue when the port closes: the exchange waiting on it ends now
UNSOLICITED = ("+CLIP:", "+CRING:", "+CREG:", "+CGREG:", "+CEREG:", "+CMTI:", "+CDSI:", "+CPIN:", "+QIND:", "^")


def meaning(code: str) -> str:
    """A result code for a person: ``BUSY`` -> "the line was busy ... (BUSY)"."""
    if code.startswith("+CME ERROR:"):
        return f"the modem refused the call: {code[11:].strip()} ({code})"
    return f"{MEANING.get(code, 'unexpected answer')} ({code})"


class AtPort:
    def __init__(self, port: str, baudrate: int = 115200, answer_seconds: float = 3.0) -> None:
        self.port, self.baudrate, self.answer_seconds = port, baudrate, answer_seconds
        self.ended = ""  # the last call-ending code seen, unsolicited or final
        self._serial: serial.Serial | None = None
        self._ready = False  # echo off and verbose errors set since the port was opened
        self._lines: asyncio.Queue[str] = asyncio.Queue()
        self._partial = b""

    async def open(self) -> None:
        """Open the port if it is not; TransportError unless the modem answers ``AT`` with OK."""
        if self._serial is None:
            try:
                self._serial = serial.Serial(self.port, self.baudrate, timeout=0, exclusive=True)
            except (serial.SerialException, OSError, ValueError) as exc:
                raise TransportError(f"port {self.port}: {exc}") from None
            self._ready, self._partial = False, b""
            asyncio.get_running_loop().add_reader(self._serial.fileno(), self._on_readable)
        for command in ("AT",) if self._ready else ("AT", "ATE0", "AT+CMEE=2"):
            await self.expect_ok(command)
        self._ready = True

    async def expect_ok(self, command: str) -> None:
        final, _ = await self.command(command)
        if final != "OK":
            raise TransportError(f"the modem on {self.port} answered {command} with {final}")

    async def command(
        self, command: str, timeout: float | None = None, finals: tuple[str, ...] = ()
    ) -> tuple[str, list[str]]:
        """Send ``command``; its final result code (``OK``, ``ERROR``, ``+CME ERROR: ...`` or one
        of ``finals``) and its information lines. TransportError if no answer within ``timeout``
        (``answer_seconds`` by default) or the port is gone; the port is closed then."""
        self.drain()
        if self._serial is None:
            raise TransportError(f"port {self.port} is closed")
        timeout = self.answer_seconds if timeout is None else timeout
        try:
            os.write(self._serial.fileno(), command.encode() + b"\r")
            async with asyncio.timeout(timeout):
                return await self._answer(command, finals)
        except TimeoutError:
            self.close()
            raise TransportError(f"the modem on {self.port} did not answer {command} within {timeout:g} s") from None
        except OSError as exc:
            self.close()
            raise TransportError(f"port {self.port}: {exc}") from None

    async def _answer(self, command: str, finals: tuple[str, ...]) -> tuple[str, list[str]]:
        info: list[str] = []
        while True:
            line = await self._lines.get()
            if line == GONE:
                raise TransportError(f"port {self.port}: the device went away")
            if line in ("OK", "ERROR", *finals) or line.startswith(("+CME ERROR:", "+CMS ERROR:")):
                self.ended = line if line in CALL_ENDS else self.ended
                return line, info
            if not self._unsolicited(line) and line != command:  # not the echo
                info.append(line)

    def drain(self) -> None:
        """Skip what came unasked (a call-ending code is kept in ``ended``)."""
        while not self._lines.empty():
            self._unsolicited(self._lines.get_nowait())

    def close(self) -> None:
        if self._serial is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._serial.fileno())
            with contextlib.suppress(Exception):
                self._serial.close()
        self._serial, self._ready = None, False
        self._lines.put_nowait(GONE)
        self._lines = asyncio.Queue()

    def _unsolicited(self, line: str) -> bool:
        if line in CALL_ENDS:
            self.ended = line
            return True
        return line in ("RING", "RDY") or line.startswith(UNSOLICITED)

    def _on_readable(self) -> None:
        if self._serial is None:
            return
        try:
            data = os.read(self._serial.fileno(), 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the device went away
            self.close()
            return
        *lines, self._partial = re.split(rb"[\r\n]", self._partial + data)
        for line in lines:
            if text := line.decode(errors="replace").strip():
                self._lines.put_nowait(text)
