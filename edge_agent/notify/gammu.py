"""The cellular modem as a link: SMS out through Gammu's SMS daemon, SMS in from its inbox.

Owns: ``ModemLink`` (the ``Link`` the outbox drains into: a message is an SMS, its topic
``sms/<E.164 number>``, its payload the UTF-8 text) and the reading of received SMS.

Out: each SMS is handed to ``gammu-smsd-inject`` (Gammu's own tool: it encodes GSM 03.38
7-bit or UCS-2 and splits a long text into concatenated parts) which writes it into the
daemon's outbox folder; "taken" means that file is written, and only then does the outbox
row go. A crash between the two sends that SMS again after restart: at most twice, never lost.
The daemon (gammu-smsd, its own systemd unit) owns the modem, moves a sent SMS to ``sent/``
and a failed one to ``error/``.

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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_agent.config.gammu import SmsdFolders
from edge_agent.errors import TransportError
from edge_agent.notify.report import Report
from edge_agent.transports.link import Outgoing

log = logging.getLogger("edge_agent.modem")

# GSM 03.38 basic alphabet: an SMS of only these goes as 7-bit (160 characters, 153 per part)
GSM7 = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
INJECT_TIMEOUT_S = 15.0


def is_gsm7(text: str) -> bool:
    return all(c in GSM7 for c in text)


@dataclass(frozen=True)
class ReceivedSms:
    path: Path
    number: str
    text: str


class ModemLink:
    """SMS through the daemon's folders; ``connected`` while its outbox folder is there."""

    name = "modem"

    def __init__(self, folders: SmsdFolders, inject: str = "gammu-smsd-inject") -> None:
        self.folders = folders
        self.inject = inject
        self.handed = 0  # SMS handed to the daemon
        self.unreadable = 0  # received files that are not an SMS backup
        self._handed: dict[str, str] = {}  # the daemon's file name -> topic, until sent or failed

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
        """``topic``: ``sms/<number>``, or ``sms/<number>/<alert id>`` for a notification (so a
        failed send can be traced back to its alert, see ``failed_sends``)."""
        parts = topic.split("/")
        if len(parts) not in (2, 3) or parts[0] != "sms" or not parts[1]:
            raise TransportError(f"not an SMS topic: {topic!r} (expected sms/<number>[/<alert id>])")
        name = await self._inject(parts[1], payload.decode("utf-8"))
        self._handed[name] = topic

    async def publish_many(self, messages: Sequence[Outgoing]) -> list[Exception | None]:
        if not self.connected:
            raise TransportError(f"the modem's outbox {self.folders.outbox} or {self.inject!r} is missing")
        results: list[Exception | None] = []
        for topic, payload, _qos, _retain in messages:
            try:
                await self.publish(topic, payload)
            except TransportError as exc:
                results.append(exc)
                break  # the rest stay in order behind it
            results.append(None)
        return results

    def reports(self) -> list[Report]:
        return [Report(topic, "failed", "the modem daemon gave up on it (error/)") for topic in self.failed_sends()]

    def failed_sends(self) -> list[str]:
        """The topics of SMS handed over in this run that the daemon has since given up on
        (moved to ``error/``: no credit, no network, a modem error). Each is reported once;
        those it sent are forgotten."""
        failed = []
        for name in list(self._handed):
            if (self.folders.error / name).exists():
                failed.append(self._handed.pop(name))
            elif (self.folders.sent / name).exists():
                del self._handed[name]
        return failed

    async def _inject(self, number: str, text: str) -> str:
        command = [self.inject, "-c", str(self.folders.smsdrc), "TEXT", number, "-len", str(max(len(text), 1))]
        if not is_gsm7(text):
            command.append("-unicode")
        command += ["-text", text]
        try:
            proc = await asyncio.create_subprocess_exec(
                *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
            )
            out, _ = await asyncio.wait_for(proc.communicate(), INJECT_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            raise TransportError(f"{self.inject} failed: {exc}") from exc
        said = out.decode(errors="replace")
        if proc.returncode != 0:
            tail = said.strip().splitlines()[-1:] or ["no output"]
            raise TransportError(f"{self.inject} exited {proc.returncode}: {tail[0]}")
        self.handed += 1
        written = re.search(r"Written message with ID (\S+)", said)
        return Path(written.group(1)).name if written else ""

    # ----- received SMS -------------------------------------------------------------------------
    def received(self) -> list[ReceivedSms]:
        """The SMS waiting in the inbox, oldest first (Gammu names them IN<date>_<time>_...)."""
        inbox = self.folders.inbox
        if not inbox.is_dir():
            return []
        found = []
        for path in sorted(p for p in inbox.iterdir() if p.is_file() and p.name.startswith("IN")):
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
        os.replace(path, target / path.name)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def read_backup(path: Path) -> ReceivedSms | None:
    """One received SMS in Gammu's SMS backup format: its number and text (the parts of a
    concatenated SMS joined in order). None if the file is not one."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(path.read_text(encoding="utf-8", errors="replace"))
    except (OSError, configparser.Error):
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
