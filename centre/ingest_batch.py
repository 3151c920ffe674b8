"""A batch of parsed north messages, and the registry of handlers for more topic classes.

Owns: ``Item`` (one good message, decoded), ``Batch`` (the items and the counted rejects of one
transaction), ``merge``, ``RejectedError``, ``register_handler`` / ``HANDLERS`` and ``run_extra``
(a registered class's message, inside the batch's transaction). Shared by centre/ingest.py
(which fills batches) and centre/ingest_write.py (which writes them).
Must not import: the ingest, the service, the console, the rollout driver.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from centre.db import Tx

log = logging.getLogger("centre.ingest")

Handler = Callable[[Tx, str, dict[str, Any], float], None]
HANDLERS: dict[str, Handler] = {}


class RejectedError(Exception):
    """Raised by a handler: the message is bad; counted under ``reason`` and acknowledged."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def register_handler(topic_class: str, handler: Handler) -> None:
    """Route ``district/v1/<gateway>/<topic_class>[/...]`` to ``handler`` (see centre/ingest.py)."""
    HANDLERS[topic_class] = handler


@dataclass(slots=True)
class Item:
    """One good message, decoded, waiting for the batch's transaction."""

    kind: str  # status | alert | telemetry | policy_ack | rollout | shadow | event | extra
    gateway: str
    msg_id: str | None
    data: Any
    now: float
    lamp: str = ""  # telemetry: the lamp; extra: the registered class
    raw: bytes = b""


@dataclass
class Batch:
    items: list[Item] = field(default_factory=list)
    rejects: Counter[tuple[str, str]] = field(default_factory=Counter)
    reject_detail: dict[tuple[str, str], tuple[str, float]] = field(default_factory=dict)


def merge(batches: list[Batch]) -> Batch:
    """Several batches as one, in order (one transaction for all)."""
    if len(batches) == 1:
        return batches[0]
    merged = Batch()
    for batch in batches:
        merged.items += batch.items
        merged.rejects.update(batch.rejects)
        merged.reject_detail.update(batch.reject_detail)
    return merged


def run_extra(tx: Tx, item: Item, batch: Batch) -> None:
    """One message of a registered class, inside the batch's transaction."""
    handler = HANDLERS[item.lamp]
    try:
        handler(tx, item.gateway, item.data, item.now)
    except RejectedError as exc:
        key = (exc.reason, item.lamp)
        batch.rejects[key] += 1
        batch.reject_detail[key] = (f"{item.gateway}: {exc.detail}"[:500], item.now)
        log.warning("rejected %s message from %s (%s): %s", item.lamp, item.gateway, exc.reason, exc.detail)
