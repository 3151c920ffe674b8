"""The cellular modem as a link: SMS out through Gammu's SMS daemon, SMS in from its inbox.

Owns: ``ModemLink`` (the ``NotifyLink`` the outbox drains into: a message is an SMS, its topic
``sms/<E.164 number>[/<alert ids>]``, its payload the UTF-8 text), what became of each SMS it
handed over (``reports``) and the reading of received SMS.

Out: each SMS is handed to ``gammu-smsd-inject`` (Gammu's own tool: it encodes GSM 03.38
7-bit or UCS-2 and splits a long text into concatenated parts) which writes it into the
daemon's outbox folder; "taken" means that file is written, and only then does the outbox
row go. A crash between the two: after restart the agent asks ``already_taken`` (a file to that
number with that text in the daemon's folders, written since the first try) before handing it
over again: never lost, at most twice however often a crash repeats (`just chaos` row j).
The daemon (gammu-smsd, its own systemd unit) owns the modem, moves a sent SMS to ``sent/``
and a failed one to ``error/``.

Reports (``reports``): ``failed`` when the daemon moved the SMS to ``error/``; ``delivered`` when
the network's delivery report for every part of it came back. With ``deliveryreport = sms`` the
daemon asks the network for a report on every part it sends and writes each report into
``inbox/`` like a received SMS (SMS backup format, ``PDU = Status_Report``, the recipient's
``Number``, the ``MessageReference`` and, as its text, libgammu's word for the status:
``Delivered``, ``Failed``, ``Pending`` or ``Unknown``). The files backend keeps the message
reference of a sent SMS nowhere but in its log, so a report is matched by number: to the oldest
SMS sent to that number still waiting for reports (the network delivers, and reports, one
number's SMS in the order sent). A ``Failed`` report makes the SMS failed; ``Pending`` waits
for the next. Each report file is moved to ``inbox/reports/`` once read, so it is never taken
for a reply. What was handed over is remembered in memory only: an SMS handed over before a
restart is not reported on. "Delivered" stops nothing: only a person's reply does.

In: the daemon writes each received SMS as a file in ``inbox/`` (SMS backup format, ``detail``).
The agent handles one, commits what it caused, and only then moves the file to
``inbox/handled/``: a reply that arrived while the agent was down is applied once after restart.
Must not import: the agent, the engine.
"""

from __future__ import annotations

import asyncio
import configparser
import logging
import os
import re
import shutil
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_agent.config.gammu import SmsdFolders
from edge_agent.errors import TransportError
from edge_agent.notify.report import Report, publish_each
from edge_agent.transports.link import Outgoing

log = logging.getLogger("edge_agent.modem")

# GSM 03.38 basic alphabet: an SMS of only these goes as 7-bit (160 characters, 153 per part)
GSM7 = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
INJECT_TIMEOUT_S = 15.0
AWAITING_REPORTS = 500  # sent SMS remembered for their delivery reports (the oldest are forgotten)
GAVE_UP = "the modem daemon gave up (error/)"


def is_gsm7(text: str) -> bool:
    return all(c in GSM7 for c in text)


@dataclass(frozen=True)
class ReceivedSms:
    path: Path
    number: str
    text: str


@dataclass(frozen=True)
class StatusReport:
    """The network's delivery report on one part of an SMS, as the daemon wrote it."""

    path: Path
    number: str  # the recipient of the SMS it reports on
    status: str  # libgammu's word: Delivered, Failed, Pending, Unknown
    reference: int | None  # the message reference (TP-MR) of the part


@dataclass
class _Handed:
    """An SMS the daemon took, until it is reported on."""

    name: str  # the daemon's file name (reused once the file has left the outbox)
    topic: str
    number: str
    parts: int
    stale: dict[str, int | None]  # folder -> mtime_ns of an older file of that name when handed
    delivered: int = 0  # parts with a Delivered report


class ModemLink:
    """SMS through the daemon's folders; ``connected`` while its outbox folder is there."""

    name = "modem"

    def __init__(self, folders: SmsdFolders, inject: str = "gammu-smsd-inject") -> None:
        self.folders = folders
        self.inject = inject
        self.handed = 0  # SMS handed to the daemon
        self.unreadable = 0  # received files that are not an SMS backup
        self._handed: dict[str, _Handed] = {}  # in the daemon's outbox (by file name)
        self._awaiting: deque[_Handed] = deque(maxlen=AWAITING_REPORTS)  # sent, oldest first
        self._settled: list[Report] = []  # found out and not yet reported

    # ----- the Link seam ----------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self.folders.outbox.is_dir() and shutil.which(self.inject) is not None

    async def wait_connected(self, timeout: float | None = None) -> None:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not self.connected:
            if deadline is not None and loop.time() >= deadline:
                raise TransportError(f"the modem's outbox {self.folders.outbox} or {self.inject!r} is missing")
            await asyncio.sleep(1.0)

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """``topic``: ``sms/<number>``, or ``sms/<number>/<alert ids>`` for a notification (so
        what became of it can be traced back to its alerts, see ``reports``)."""
        parts = topic.split("/")
        if len(parts) not in (2, 3) or parts[0] != "sms" or not parts[1]:
            raise TransportError(f"not an SMS topic: {topic!r} (expected sms/<number>[/<alert ids>])")
        path = await self._inject(parts[1], payload.decode("utf-8"))
        if path is not None:
            self._remember(path, topic, parts[1])

    async def publish_many(self, messages: Sequence[Outgoing]) -> list[Exception | None]:
        if not self.connected:
            raise TransportError(f"the modem's outbox {self.folders.outbox} or {self.inject!r} is missing")
        return await publish_each(self.publish, messages)

    # ----- what became of them ------------------------------------------------------------------
    def reports(self) -> list[Report]:
        """What became of the SMS handed over in this run since the last call, each once:
        ``failed`` when the daemon gave up on it (``error/``: no credit, no network, a modem
        error) or the network reported a part undeliverable; ``delivered`` when every part's
        delivery report said so. Sent and not yet reported is no report."""
        for handed in list(self._handed.values()):
            if (self.folders.outbox / handed.name).exists():
                continue
            where = self._moved_to(handed)
            if where is not None:
                del self._handed[handed.name]
                self._settle(handed, where)
        found, self._settled = self._settled, []
        for report in self._status_reports():
            found.extend(self._apply(report))
            self._move(report.path, "reports")
        return found

    def _remember(self, path: Path, topic: str, number: str) -> None:
        name = path.name
        previous = self._handed.pop(name, None)
        if previous is not None:  # the daemon reused the name: the older SMS has left the outbox
            self._settle(previous, self._moved_to(previous))
        if (self.folders.outbox / name).exists():  # what is in sent/ or error/ now is older
            stale = {folder: _mtime(self._folder(folder) / name) for folder in ("sent", "error")}
        else:  # the daemon already moved it
            stale = {"sent": None, "error": None}
        self._handed[name] = _Handed(name, topic, number, _parts(path, self._folder("sent") / name), stale)

    def _settle(self, handed: _Handed, where: str | None) -> None:
        if where == "error":
            self._settled.append(Report(handed.topic, "failed", GAVE_UP))
        elif where == "sent":
            self._awaiting.append(handed)

    def _folder(self, which: str) -> Path:
        return self.folders.sent if which == "sent" else self.folders.error

    def _moved_to(self, handed: _Handed) -> str | None:
        """``sent`` or ``error``: where the daemon put this SMS (a file of its name written
        after the hand-off, the newer if both: the daemon reuses names), else None."""
        newer = {}
        for folder in ("sent", "error"):
            mtime = _mtime(self._folder(folder) / handed.name)
            if mtime is not None and mtime != handed.stale[folder]:
                newer[folder] = mtime
        return max(newer, key=lambda f: newer[f]) if newer else None

    def _status_reports(self) -> list[StatusReport]:
        inbox = self.folders.inbox
        if not inbox.is_dir():
            return []
        found = []
        for path in sorted(p for p in inbox.iterdir() if p.is_file() and p.name.startswith("IN")):
            report = read_status_report(path)
            if report is not None:
                found.append(report)
        return found

    def _apply(self, report: StatusReport) -> list[Report]:
        handed = next((h for h in self._awaiting if h.number == report.number), None)
        if handed is None:
            log.info("delivery report from %s (%s) for no SMS sent in this run", report.number, report.status)
            return []
        status = report.status.lower()
        if status == "delivered":
            handed.delivered += 1
            if handed.delivered < handed.parts:
                return []
            self._awaiting.remove(handed)
            return [Report(handed.topic, "delivered")]
        if status == "failed":
            self._awaiting.remove(handed)
            return [Report(handed.topic, "failed", "the network could not deliver it (delivery report: Failed)")]
        return []  # Pending: the network tries again and reports again; Unknown: nothing to go on

    def already_taken(self, topic: str, payload: bytes, since: float) -> bool:
        """Whether the daemon already has this SMS: a file to the topic's number with this text,
        written at or after ``since`` (wall-clock seconds), in its outbox, ``sent/`` or ``error/``.
        Asked before handing over again an SMS whose hand-off a crash interrupted, so that a
        crash in the hand-off sends it at most twice however often it repeats."""
        parts = topic.split("/")
        if len(parts) < 2:
            return False
        number, text = parts[1], payload.decode("utf-8")
        for folder in (self.folders.outbox, self.folders.sent, self.folders.error):
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                mtime = _mtime(path)
                if mtime is None or mtime < since or number not in path.name:
                    continue
                found = read_backup(path)
                if found is not None and found.number == number and found.text == text:
                    return True
        return False

    async def _inject(self, number: str, text: str) -> Path | None:
        command = [self.inject, "-c", str(self.folders.smsdrc), "TEXT", number, "-len", str(max(len(text), 1))]
        if not is_gsm7(text):
            command.append("-unicode")
        command += ["-text", text]
        try:
            proc = await asyncio.create_subprocess_exec(
                *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
            )
            async with asyncio.timeout(INJECT_TIMEOUT_S):  # (3.11's wait_for can swallow a cancellation)
                out, _ = await proc.communicate()
        except (OSError, TimeoutError) as exc:
            raise TransportError(f"{self.inject} failed: {exc}") from exc
        said = out.decode(errors="replace")
        if proc.returncode != 0:
            tail = said.strip().splitlines()[-1:] or ["no output"]
            raise TransportError(f"{self.inject} exited {proc.returncode}: {tail[0]}")
        self.handed += 1
        written = re.search(r"Written message with ID (\S+)", said)
        return Path(written.group(1)) if written else None

    # ----- received SMS -------------------------------------------------------------------------
    def received(self) -> list[ReceivedSms]:
        """The SMS waiting in the inbox, oldest first (Gammu names them IN<date>_<time>_...)."""
        inbox = self.folders.inbox
        if not inbox.is_dir():
            return []
        found = []
        for path in sorted(p for p in inbox.iterdir() if p.is_file() and p.name.startswith("IN")):
            if read_status_report(path) is not None:
                continue  # a delivery report, not a reply: ``reports`` takes it
            sms = read_backup(path)
            if sms is None:
                self.unreadable += 1
                log.warning("received SMS file %s is not an SMS backup: moved to unreadable/", path)
                self._move(path, "unreadable")
                continue
            found.append(sms)
        return found

    def handled(self, sms: ReceivedSms) -> None:
        """Call after what the SMS caused is on disk."""
        self._move(sms.path, "handled")

    def failed(self, sms: ReceivedSms) -> None:
        """Kept for a person in ``inbox/failed``: the agent could not handle it."""
        self._move(sms.path, "failed")

    def _move(self, path: Path, folder: str) -> None:
        target = path.parent / folder
        target.mkdir(exist_ok=True)
        name, n = path.name, 0
        while (target / name).exists():  # the daemon reuses a name once its file has left the inbox
            n += 1
            name = f"{path.name}.{n}"
        os.replace(path, target / name)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def _parts(*candidates: Path) -> int:
    """How many SMS Gammu split the text into: the sections of its file (in the outbox, or
    already moved on), 1 if it cannot be read."""
    for path in candidates:
        parser = _backup(path)
        if parser is not None:
            return max(1, sum(1 for s in parser.sections() if s.startswith("SMSBackup")))
    return 1


def _backup(path: Path) -> configparser.ConfigParser | None:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read_string(path.read_text(encoding="utf-8", errors="replace"))
    except (OSError, configparser.Error):
        return None
    return parser


def read_status_report(path: Path) -> StatusReport | None:
    """A delivery report the daemon wrote into its inbox (``deliveryreport = sms``); None if
    the file is anything else."""
    parser = _backup(path)
    if parser is None or not parser.has_section("SMSBackup000"):
        return None
    body = parser["SMSBackup000"]
    if body.get("PDU", "").strip().lower() != "status_report":
        return None
    try:
        status = bytes.fromhex("".join(body[k].strip() for k in sorted(body) if k.startswith("text")))
        word = status.decode("utf-16-be").strip()
    except ValueError:
        word = "Unknown"
    reference = body.get("MessageReference", "").strip()
    number = body.get("Number", "").strip().strip('"')
    return StatusReport(path, number, word or "Unknown", int(reference) if reference.isdigit() else None)


def read_backup(path: Path) -> ReceivedSms | None:
    """One received SMS in Gammu's SMS backup format: its number and text (the parts of a
    concatenated SMS joined in order). None if the file is not one."""
    parser = _backup(path)
    if parser is None:
        return None
    number, texts = "", []
    for section in sorted(s for s in parser.sections() if s.startswith("SMSBackup")):
        body = parser[section]
        number = number or body.get("Number", "").strip().strip('"')
        lines = sorted((k for k in body if k.lower().startswith("text")), key=lambda k: int(k[4:] or 0))
        hexed = "".join(body[k].strip() for k in lines)
        try:
            texts.append(bytes.fromhex(hexed).decode("utf-16-be"))
        except ValueError:
            return None
    if not number:
        return None
    return ReceivedSms(path, number, "".join(texts))
