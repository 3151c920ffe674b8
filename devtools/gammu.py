"""Gammu's SMS daemon on its ``dummy`` phone: a real gammu-smsd with a folder standing in for
the modem, for tests and the demo (the launcher, as devtools/mosquitto.py is Mosquitto's).

``DummyModem(directory)`` writes an smsdrc (files service, ``detail`` inbox format: what the
gateway's ``[modem]`` expects), starts ``gammu-smsd`` and stops it on exit. ``receive(number,
text)`` is a responder's phone sending an SMS: a file in Gammu's SMS backup format dropped into
the dummy phone's inbox folder, as Gammu's own smsd tests do. ``report(number, status)`` is the
network's delivery report for an SMS sent to ``number``, arriving the same way (the dummy phone
reads any SMS backup entry, ``PDU = Status_Report`` included; the daemon then writes it into its
inbox as it does a real modem's report). ``sent()`` reads what the daemon handed to the network:
per SMS its number and the parts as they went out (a long or Chinese text is split by Gammu:
UCS-2, 67 characters per concatenated part). ``transmitted()`` reads the same from the daemon's
log, one line per send: the daemon reuses an outbox file name once the file has gone, and its
move to ``sent/`` then overwrites the older copy, so only the log counts every send.
"""

from __future__ import annotations

import configparser
import itertools
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

GAMMU_SMSD = "gammu-smsd"


def gammu_smsd_binary() -> str | None:
    return shutil.which(GAMMU_SMSD)


@dataclass(frozen=True)
class SentSms:
    path: Path
    number: str
    parts: tuple[str, ...]  # the text of each part, in order

    @property
    def text(self) -> str:
        return "".join(self.parts)


SMSDRC = """[gammu]
model = dummy
connection = none
device = {phone}/

[smsd]
service = files
inboxpath = {root}/inbox/
outboxpath = {root}/outbox/
sentsmspath = {root}/sent/
errorsmspath = {root}/error/
inboxformat = detail
outboxformat = detail
transmitformat = auto
deliveryreport = sms
checkbattery = 0
checksignal = 0
checksecurity = 0
receivefrequency = 1
commtimeout = 1
loopsleep = 1
logfile = {root}/smsd.log
debuglevel = 1
"""


class DummyModem:
    def __init__(self, directory: Path) -> None:
        self.root = directory.resolve()
        self.phone = self.root / "phone"
        self.smsdrc = self.root / "smsdrc"
        self.process: subprocess.Popen[bytes] | None = None
        self._received = itertools.count(1)

    def __enter__(self) -> DummyModem:
        binary = gammu_smsd_binary()
        if binary is None:
            raise RuntimeError("gammu-smsd is not installed (Debian: apt-get install gammu-smsd)")
        for folder in ("phone", "inbox", "outbox", "sent", "error"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        self.smsdrc.write_text(SMSDRC.format(phone=self.phone, root=self.root))
        self.process = subprocess.Popen(
            [binary, "-c", str(self.smsdrc)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while not (self.phone / "sms" / "1").is_dir():  # the dummy phone is made at start-up
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gammu-smsd did not start: {self.log()[-500:]}")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object | TracebackType) -> None:
        self.stop()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def log(self) -> str:
        path = self.root / "smsd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # ----- the phones' side -----------------------------------------------------------------
    def receive(self, number: str, text: str) -> None:
        """An SMS from ``number`` arrives at the modem (read by the daemon within a second)."""
        coding = "Default" if text.isascii() else "Unicode_No_Compression"
        body = (
            "[SMSBackup000]\n"
            f'Number = "{number}"\n'
            "State = UnRead\nFolder = 1\n"
            f"Coding = {coding}\n"
            f"DateTime = {time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}\n"
            f"Text00 = {text.encode('utf-16-be').hex().upper()}\n"
        )
        self._arrive(body)

    def report(self, number: str, status: str = "Delivered", reference: int = 255) -> None:
        """The network's delivery report on one SMS part sent to ``number``: ``status`` is what
        libgammu decodes a report's TP-ST into (Delivered, Failed, Pending, Unknown); the dummy
        phone gives every SMS it sends the message reference 255."""
        body = (
            "[SMSBackup000]\n"
            f'Number = "{number}"\n'
            "PDU = Status_Report\n"
            f"MessageReference = {reference}\n"
            "State = UnRead\nFolder = 1\nCoding = Default\n"
            f"DateTime = {time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}\n"
            f"Text00 = {status.encode('utf-16-be').hex().upper()}\n"
        )
        self._arrive(body)

    def _arrive(self, body: str) -> None:
        location = next(self._received)  # the dummy phone's SMS memory: one file per numbered location
        staged = self.root / f"incoming-{location}"
        staged.write_text(body)
        os.replace(staged, self.phone / "sms" / "1" / str(location))  # never read half-written

    def sent(self) -> list[SentSms]:
        """What the daemon handed to the network, oldest first."""
        found = []
        for path in sorted((self.root / "sent").iterdir()):
            parser = configparser.ConfigParser(interpolation=None, strict=False)
            parser.read_string(path.read_text(encoding="utf-8", errors="replace"))
            sections = sorted(s for s in parser.sections() if s.startswith("SMSBackup"))
            parts = []
            for section in sections:
                body = parser[section]
                lines = sorted((k for k in body if k.startswith("text")), key=lambda k: int(k[4:]))
                parts.append(bytes.fromhex("".join(body[k] for k in lines)).decode("utf-16-be"))
            number = parser[sections[0]]["number"].strip('"') if sections else ""
            found.append(SentSms(path, number, tuple(parts)))
        return found

    def transmitted(self) -> list[tuple[str, str]]:
        """(number, the first part's text) of every SMS the daemon sent, from its log, in order."""
        return transmitted(self.log())


FOUND = re.compile(r'Found \d+ sms to "([^"]*)" with text "(.*)" cod \d+')
TRANSMITTED = re.compile(r"Transmitted \S+ \(total: \d+\) to (\S+)")


def transmitted(text: str) -> list[tuple[str, str]]:
    """What gammu-smsd's log (debuglevel 1) says it sent: for each ``Transmitted ... (total:``
    line, the number and the text of the ``Found ... sms`` line that started that send."""
    sends, found = [], None
    for line in text.splitlines():
        if (match := FOUND.search(line)) is not None:
            found = (match.group(1), match.group(2))
        elif (match := TRANSMITTED.search(line)) is not None and found is not None:
            sends.append(found)
            found = None
    return sends
