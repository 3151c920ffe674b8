"""What a person reads and answers: the SMS a responder gets for an alert, and the reply that
acknowledges or resolves it.

Owns: the policy's ``[messages]`` section (the SMS template in the district's language and the
reply words), the short reply code of an alert (derived from its id: nothing to store, the same
on every restart), the parsing of a reply ("1 K7QD" acknowledges, "2 K7QD" resolves) and the
key of a push's acknowledge link (``ack_token``: one alert, one responder, this gateway).
Pure: no I/O. Used by the gateway's outbound (edge_agent/agent/outbound.py) and reply flow
(edge_agent/agent/replies.py).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import string
from dataclasses import dataclass
from typing import Literal

import msgspec

# no 0/O, 1/I/L, 5/S, 8/B: a code read aloud or typed on a keypad is not mistaken
CODE_ALPHABET = "234679ACDEFGHJKMNPQRTUVWXYZ"
CODE_LENGTH = 4

DEFAULT_SMS = (
    "{priority_word} {device}: {message}. Reply {ack} {code} to take it, {resolve} {code} when done. ({gateway})"
)
DEFAULT_STORM = "{count} alerts: {lines}. Reply {ack} <code> to take one, {resolve} <code> when done. ({gateway})"
DEFAULT_LINE = "{code} {device}: {message}"
DEFAULT_REFUSED = "Not taken: {why}. Reply {ack} <code> to take an alert, {resolve} <code> when done."
DEFAULT_WHY = {
    "not_understood": "the reply was not understood",
    "unknown_code": "no open alert has that code",
    "not_yours": "that alert is not (or no longer) yours to take",
}
REFUSAL_REASONS = tuple(DEFAULT_WHY)
TEMPLATE_FIELDS = frozenset({"priority_word", "device", "message", "code", "ack", "resolve", "gateway", "rule"})
STORM_FIELDS = frozenset({"count", "lines", "ack", "resolve", "gateway"})


class Messages(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[messages]``: ``sms`` is a template with ``{device}``, ``{message}``, ``{code}``,
    ``{ack}``, ``{resolve}``, ``{gateway}``, ``{rule}`` and ``{priority_word}`` (``urgent``
    for priority 1, else ``alert``, or the policy's own words); ``ack`` and ``resolve`` are the
    words a reply starts with; ``refused`` answers a reply that changed nothing, and ``why``
    holds the reasons it gives, in the district's language."""

    sms: str = DEFAULT_SMS
    refused: str = DEFAULT_REFUSED  # the answer to a reply that changed nothing ({why}, {ack}, {resolve})
    # several alerts waiting for one phone (SMS pacing) go as one SMS: ``storm`` with {count},
    # {lines} (each alert's ``line``, joined by "; "), {ack}, {resolve}, {gateway}
    storm: str = DEFAULT_STORM
    line: str = DEFAULT_LINE  # the same fields as ``sms``
    ack: str = "1"
    resolve: str = "2"
    urgent: str = "URGENT"
    alert: str = "ALERT"
    why: dict[str, str] = msgspec.field(default_factory=lambda: dict(DEFAULT_WHY))


def template_problems(messages: Messages) -> list[tuple[str, str]]:
    """(key, what is wrong) for a template that names an unknown field or cannot be rendered."""
    problems: list[tuple[str, str]] = []
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(messages.sms) if name is not None}
    except ValueError as exc:
        return [("messages.sms", f"not a valid template: {exc}")]
    unknown = fields - TEMPLATE_FIELDS
    if unknown:
        problems.append(("messages.sms", f"unknown field(s) {sorted(unknown)}; known: {sorted(TEMPLATE_FIELDS)}"))
    if "code" not in fields:
        problems.append(("messages.sms", "the template must contain {code}: the responder replies with it"))
    try:
        refused = {name for _, name, _, _ in string.Formatter().parse(messages.refused) if name is not None}
    except ValueError as exc:
        refused = set()
        problems.append(("messages.refused", f"not a valid template: {exc}"))
    if refused - {"why", "ack", "resolve"}:
        problems.append(("messages.refused", f"unknown field(s) {sorted(refused - {'why', 'ack', 'resolve'})}"))
    for key, text, allowed in (
        ("messages.line", messages.line, TEMPLATE_FIELDS),
        ("messages.storm", messages.storm, STORM_FIELDS),
    ):
        try:
            used = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
        except ValueError as exc:
            problems.append((key, f"not a valid template: {exc}"))
            continue
        if used - allowed:
            problems.append((key, f"unknown field(s) {sorted(used - allowed)}; known: {sorted(allowed)}"))
    if "code" not in {name for _, name, _, _ in string.Formatter().parse(messages.line) if name is not None}:
        problems.append(("messages.line", "the template must contain {code}: the responder replies with it"))
    missing = set(REFUSAL_REASONS) - set(messages.why)
    if missing:
        problems.append(("messages.why", f"missing reason(s) {sorted(missing)}"))
    for key, word in (("messages.ack", messages.ack), ("messages.resolve", messages.resolve)):
        if not word or any(c.isspace() for c in word):
            problems.append((key, f"expected one word without spaces, got {word!r}"))
    if messages.ack.casefold() == messages.resolve.casefold():
        problems.append(("messages.resolve", "must differ from messages.ack"))
    return problems


def reply_code(alert_id: str) -> str:
    """The alert's short code, the same wherever and whenever it is computed."""
    digest = int.from_bytes(hashlib.sha256(alert_id.encode()).digest()[:8], "big")
    code = []
    for _ in range(CODE_LENGTH):
        digest, index = divmod(digest, len(CODE_ALPHABET))
        code.append(CODE_ALPHABET[index])
    return "".join(code)


ACK_TOKEN_BYTES = 16  # 128 bits: not guessed; 22 characters in a link


def ack_token(secret: bytes, alert_id: str, responder: str) -> str:
    """The key of ``responder``'s link to acknowledge ``alert_id`` on the gateway holding
    ``secret``: HMAC-SHA256 of ``alert_id|responder``, its first 16 bytes, URL-safe base64
    without padding. The link needs no other credential: it is one person's, for one alert."""
    mac = hmac.new(secret, f"{alert_id}|{responder}".encode(), hashlib.sha256).digest()[:ACK_TOKEN_BYTES]
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


def render_sms(
    messages: Messages, *, alert_id: str, device: str, message: str, priority: int, gateway: str, rule: str
) -> str:
    return render_alert(
        messages,
        messages.sms,
        alert_id=alert_id,
        device=device,
        message=message,
        priority=priority,
        gateway=gateway,
        rule=rule,
    )


def render_alert(
    messages: Messages,
    template: str,
    *,
    alert_id: str,
    device: str,
    message: str,
    priority: int,
    gateway: str,
    rule: str,
) -> str:
    return template.format(
        priority_word=messages.urgent if priority <= 1 else messages.alert,
        device=device,
        message=message,
        code=reply_code(alert_id),
        ack=messages.ack,
        resolve=messages.resolve,
        gateway=gateway,
        rule=rule,
    )


def render_storm(messages: Messages, lines: list[str], gateway: str) -> str:
    """One SMS for several alerts to one phone: each alert's ``line`` (with its code)."""
    return messages.storm.format(
        count=len(lines), lines="; ".join(lines), ack=messages.ack, resolve=messages.resolve, gateway=gateway
    )


def render_refusal(messages: Messages, reason: str) -> str:
    return messages.refused.format(why=messages.why.get(reason, reason), ack=messages.ack, resolve=messages.resolve)


@dataclass(frozen=True, slots=True)
class Reply:
    action: Literal["ack", "resolve"]
    code: str


_WORDS = re.compile(rf"^\s*(\S+?)\s*([A-Za-z0-9]{{{CODE_LENGTH}}})\s*[.!。！]?\s*$")


def parse_reply(messages: Messages, text: str) -> Reply | None:
    """ "1 K7QD" -> Reply("ack", "K7QD"); case and spacing are forgiven; anything else: None."""
    match = _WORDS.match(text)
    if match is None:
        return None
    word, code = match.group(1).casefold(), match.group(2).upper()
    if word == messages.ack.casefold():
        return Reply("ack", code)
    if word == messages.resolve.casefold():
        return Reply("resolve", code)
    return None
