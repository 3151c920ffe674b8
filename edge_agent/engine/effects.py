"""What the engine asks the world to do. The agent turns effects into messages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edge_agent.models import Alert


@dataclass(frozen=True, slots=True)
class LampSet:
    lamp: str
    level: float
    reason: str  # "program", "boost", "rule:<id>", "revert"


@dataclass(frozen=True, slots=True)
class AlertChanged:
    alert: Alert  # the alert as stored (status, step, responder, ...)


@dataclass(frozen=True, slots=True)
class NotifyResponder:
    responder: str
    alert: Alert
    n: int = 1  # which notification of the alert this is (1 the first; +1 per escalation)


@dataclass(frozen=True, slots=True)
class PublishRequest:
    topic: str  # relative to the gateway's topic root
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SendRequest:
    """A rule's ``send``: a message in someone else's schema, to an absolute topic."""

    link: str  # "south" | "north"
    topic: str
    payload: bytes
    qos: int
    retain: bool
    outbox: bool  # stored with the commit and sent until acknowledged; else published once


Effect = LampSet | AlertChanged | NotifyResponder | PublishRequest | SendRequest
