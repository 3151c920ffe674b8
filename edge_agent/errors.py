"""The one exception root of the project and its few categories.

Third-party exceptions are converted at the boundary (``raise TransportError(...) from None``),
so callers only ever catch these. Errors carry structured fields, not just text.
"""

from __future__ import annotations

from dataclasses import dataclass


class EdgeError(Exception):
    """Root of every error this project raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong in an input: where it is and what was expected."""

    source: str  # a file name, a topic, a port
    path: str  # key path inside it, e.g. ``rules[3].when.for``
    message: str

    def __str__(self) -> str:
        where = f"{self.source}: {self.path}" if self.path else self.source
        return f"{where}: {self.message}"


class ConfigError(EdgeError):
    """A configuration (or scenario) file is invalid. Holds every problem found, not just the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class ProtocolError(EdgeError):
    """Bytes or a payload that do not follow the contract (frame, Modbus PDU, MQTT schema)."""

    def __init__(self, reason: str, *, where: str = "", detail: str = "") -> None:
        self.reason = reason  # a short, countable key, e.g. "bad_crc", "oversized"
        self.where = where
        self.detail = detail
        text = f"{where}: {reason}" if where else reason
        super().__init__(f"{text} ({detail})" if detail else text)


class TransportError(EdgeError):
    """A link failed: broker unreachable, port gone, timeout."""


class PublishRefused(TransportError):  # noqa: N818 (the name says what happened; it is an error)
    """The broker answered a publish with a failure reason code (MQTT 5 PUBACK >= 0x80): it
    did NOT take the message. Not a dead link: sending the same message again gets the same
    answer until the broker's ACL, quota or the message changes. Keep it, park it, alarm.

    ``reason_code`` is the MQTT 5 reason code (0x87 not authorized, 0x97 quota exceeded, ...);
    ``reason`` its short snake_case name ("not_authorized"), a countable key like
    ``ProtocolError.reason``.
    """

    def __init__(self, reason_code: int, reason: str, *, topic: str = "", link: str = "") -> None:
        self.reason_code = reason_code
        self.reason = reason
        self.topic = topic
        self.link = link
        where = f"{link} publish to {topic}" if link else f"publish to {topic}"
        super().__init__(f"{where} refused by the broker: {reason} (0x{reason_code:02x})")


class PolicyError(EdgeError):
    """A policy or policy bundle was refused (bad signature, rollback, expired, ...)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)
