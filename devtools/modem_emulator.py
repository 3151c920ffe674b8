"""A cellular modem's AT port on a pseudo-terminal, for the ring channel's tests and the bench.

``ModemEmulator(callees=..., network=..., ...)`` opens a pty (``.port`` is the path a
``RingLink`` opens) and answers AT commands from a thread, as a Quectel-like modem does:
``ATD<n>;`` answers ``OK`` at once and the call then goes dialing (2) -> alerting (3) ->
answered (0) or ends, as ``AT+CLCC`` shows; a call the far end ends is announced unsolicited
(``NO CARRIER``, ``BUSY``). What the far end does is scripted per number (``Callee``); the
modem can have no network (``+CME ERROR: no network service``), no dial tone (``NO DIALTONE``),
no SIM, or be silent (reads, never answers). ``noise`` sends unsolicited codes before every
answer and lists a waiting incoming call in ``AT+CLCC``.

The record is the emulator's own, independent of the gateway: ``commands`` (every line
received) and ``calls`` (number, when dialled, when the far end began ringing, when answered,
when ended and by whom: ``gateway``, ``callee`` or ``network``). Times are ``time.monotonic()``.

``python -m devtools.modem_emulator [--busy N] [--answers N] [--no-network] ...`` prints the
port path and runs until Ctrl-C, printing each call as it ends.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import threading
import time
import tty
from dataclasses import dataclass, field
from types import TracebackType

NOISE = ("+CREG: 1", "RING", '+CLIP: "+8613911112222",145,,,,0', "+QIND: SMS DONE")
INCOMING = '+CLCC: 2,1,4,0,0,"+8613911112222",145'  # a call waiting for us, not ours


@dataclass(frozen=True)
class Callee:
    """What the phone at a number does. By default it rings until the caller hangs up."""

    dial_seconds: float = 0.2  # the network's time to reach it (dialing, state 2)
    rejects_after: float | None = None  # seconds of ringing, then the callee rejects (NO CARRIER)
    answers_after: float | None = None  # seconds of ringing, then the callee answers (state 0)
    busy: bool = False  # BUSY instead of ringing
    unreachable: bool = False  # NO CARRIER instead of ringing (switched off, no such number)


@dataclass
class Call:
    number: str
    dialled: float
    alerting: float | None = None
    answered: float | None = None
    ended: float | None = None
    ended_by: str = ""  # "gateway" (ATH, AT+CHUP), "callee" or "network"
    code: str = ""  # the unsolicited code the modem sent when the far end ended it

    @property
    def ringing_seconds(self) -> float | None:
        if self.alerting is None or self.ended is None:
            return None
        return (self.answered or self.ended) - self.alerting


@dataclass
class ModemEmulator:
    callees: dict[str, Callee] = field(default_factory=dict)
    network: bool = True  # False: ATD answers +CME ERROR: no network service
    sim: bool = True  # False: ATD answers +CME ERROR: SIM not inserted
    dialtone: bool = True  # False: ATD answers NO DIALTONE
    silent: bool = False  # reads everything, answers nothing
    noise: bool = False  # unsolicited codes before every answer, an incoming call in AT+CLCC
    commands: list[str] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.port = os.ttyname(self._slave)
        self._echo, self._cmee = True, 0
        self._buffer = b""
        self._lock = threading.Lock()  # the record and the call states
        self._write_lock = threading.Lock()  # the pty, written by the thread and by send()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="modem-emulator", daemon=True)

    def __enter__(self) -> ModemEmulator:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(5)
        for fd in (self._master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)

    def record(self) -> list[Call]:
        """A copy of the calls so far (the thread goes on changing its own)."""
        with self._lock:
            return [Call(**vars(c)) for c in self.calls]

    def send(self, line: str) -> None:
        """An unsolicited result code, now."""
        self._write(f"\r\n{line}\r\n")

    # ----- the modem ----------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._master], [], [], 0.01)
            if ready:
                try:
                    self._buffer += os.read(self._master, 4096)
                except OSError:  # nobody has the port open right now
                    time.sleep(0.01)
            while b"\r" in self._buffer:
                raw, _, self._buffer = self._buffer.partition(b"\r")
                line = raw.decode(errors="replace").strip()
                with self._lock:
                    self.commands.append(line)
                    if line and not self.silent:
                        self._answer(line)
            with self._lock:
                self._advance(time.monotonic())

    def _answer(self, line: str) -> None:
        if self._echo:
            self._write(line + "\r")
        if self.noise:
            for code in NOISE:
                self.send(code)
        command = line.upper()
        if command.startswith("ATD"):
            self._dial(line[3:].rstrip(";"))
        elif command in ("ATH", "AT+CHUP"):
            for call in self._live():
                call.ended, call.ended_by = time.monotonic(), "gateway"
            self.send("OK")
        elif command == "AT+CLCC":
            for index, call in enumerate(self._live(), 1):
                state = 0 if call.answered else 3 if call.alerting else 2
                self.send(f'+CLCC: {index},0,{state},0,0,"{call.number}",145')
            if self.noise:
                self.send(INCOMING)
            self.send("OK")
        elif command in ("AT", "ATE0", "ATE1") or command.startswith("AT+CMEE="):
            self._echo = command != "ATE0" and (self._echo or command == "ATE1")
            self._cmee = int(command[8:] or 0) if command.startswith("AT+CMEE=") else self._cmee
            self.send("OK")
        else:
            self.send("ERROR")

    def _dial(self, number: str) -> None:
        if not self.sim:
            self.send(self._cme(10, "SIM not inserted"))
        elif not self.network:
            self.send(self._cme(30, "no network service"))
        elif not self.dialtone:
            self.send("NO DIALTONE")
        elif self._live():
            self.send(self._cme(3, "operation not allowed"))
        else:
            self.calls.append(Call(number, time.monotonic()))
            self.send("OK")

    def _cme(self, code: int, text: str) -> str:
        return ("ERROR", f"+CME ERROR: {code}", f"+CME ERROR: {text}")[min(self._cmee, 2)]

    def _advance(self, now: float) -> None:
        for call in self._live():
            callee = self.callees.get(call.number, Callee())
            if call.alerting is None and now - call.dialled >= callee.dial_seconds:
                if callee.busy or callee.unreachable:
                    self._end(call, now, "BUSY" if callee.busy else "NO CARRIER")
                    continue
                call.alerting = now
            if call.alerting is None or call.answered is not None:
                continue
            if callee.answers_after is not None and now - call.alerting >= callee.answers_after:
                call.answered = now
            elif callee.rejects_after is not None and now - call.alerting >= callee.rejects_after:
                self._end(call, now, "NO CARRIER")

    def _end(self, call: Call, now: float, code: str) -> None:
        call.ended, call.ended_by, call.code = now, "callee", code
        self.send(code)

    def _live(self) -> list[Call]:
        return [c for c in self.calls if c.ended is None]

    def _write(self, text: str) -> None:
        with self._write_lock, contextlib.suppress(OSError):
            os.write(self._master, text.encode())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--busy", action="append", default=[], metavar="NUMBER")
    parser.add_argument("--answers", action="append", default=[], metavar="NUMBER", help="answers after 3 s")
    parser.add_argument("--rejects", action="append", default=[], metavar="NUMBER", help="rejects after 3 s")
    parser.add_argument("--no-network", action="store_true")
    parser.add_argument("--no-sim", action="store_true")
    parser.add_argument("--no-dialtone", action="store_true")
    parser.add_argument("--silent", action="store_true")
    parser.add_argument("--noise", action="store_true", help="unsolicited codes before every answer")
    args = parser.parse_args(argv)
    callees = {n: Callee(busy=True) for n in args.busy}
    callees |= {n: Callee(answers_after=3.0) for n in args.answers}
    callees |= {n: Callee(rejects_after=3.0) for n in args.rejects}
    modem = ModemEmulator(
        callees,
        network=not args.no_network,
        sim=not args.no_sim,
        dialtone=not args.no_dialtone,
        silent=args.silent,
        noise=args.noise,
    )
    with modem:
        print(modem.port, flush=True)
        shown = 0
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(0.2)
                ended = [c for c in modem.record() if c.ended is not None]
                for call in ended[shown:]:
                    rang = "" if call.ringing_seconds is None else f", rang {call.ringing_seconds:.1f} s"
                    print(f"call {call.number}: ended by {call.ended_by} {call.code}{rang}".rstrip(), flush=True)
                shown = len(ended)


if __name__ == "__main__":
    main()
