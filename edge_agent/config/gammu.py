"""The modem's side of the gateway file: Gammu's SMS daemon config (``smsdrc``), read for the
folders the agent shares with the daemon.

Owns: ``SmsdFolders`` and ``read_smsdrc``: the daemon must use the ``files`` service with the
``detail`` inbox format (each received SMS a file in Gammu's SMS backup format, which keeps the
number and the exact text, Chinese included). Problems name the smsdrc's key, like every
other config problem.
"""

from __future__ import annotations

import configparser
from dataclasses import dataclass
from pathlib import Path

from edge_agent.errors import ConfigError, Problem


@dataclass(frozen=True)
class SmsdFolders:
    smsdrc: Path
    inbox: Path  # received SMS, one file each (detail format); the agent moves them to inbox/handled
    outbox: Path  # SMS waiting for the modem (written by gammu-smsd-inject)
    sent: Path  # handed to the network
    error: Path  # the modem could not send them


def read_smsdrc(path: Path) -> SmsdFolders:
    source = str(path)
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";", "#"))
    try:
        with path.open(encoding="utf-8") as f:
            parser.read_file(f)
    except OSError as exc:
        raise ConfigError([Problem(source, "smsd", f"cannot read Gammu's smsdrc: {exc.strerror}")]) from None
    except configparser.Error as exc:
        raise ConfigError([Problem(source, "smsd", f"not an INI file: {exc}")]) from None
    if not parser.has_section("smsd"):
        raise ConfigError([Problem(source, "smsd", "no [smsd] section (Gammu's SMS daemon config)")])
    smsd = parser["smsd"]
    problems: list[Problem] = []
    if smsd.get("service", "").strip().lower() != "files":
        problems.append(Problem(source, "smsd.service", "expected 'files': the agent shares folders with the daemon"))
    if smsd.get("inboxformat", "standard").strip().lower() != "detail":
        problems.append(
            Problem(source, "smsd.inboxformat", "expected 'detail' (SMS backup format: exact number and text)")
        )
    folders: dict[str, Path] = {}
    for name, key in (
        ("inbox", "inboxpath"),
        ("outbox", "outboxpath"),
        ("sent", "sentsmspath"),
        ("error", "errorsmspath"),
    ):
        value = smsd.get(key, "").strip()
        if not value:
            problems.append(Problem(source, f"smsd.{key}", "missing: the agent needs this folder"))
            continue
        folder = Path(value)
        folders[name] = folder if folder.is_absolute() else path.parent / folder
    if problems:
        raise ConfigError(problems)
    return SmsdFolders(path, **folders)
