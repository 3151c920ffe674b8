"""What the gateways send north, parsed and written to the centre's database in batches.

Owns: the north topic grammar the centre reads (``district/v1/<gateway>/<class...>``), decoding
each class's payload with msgspec, counting bad messages by reason (``rejects``: a bad message is
logged once, counted and acknowledged; it never stops ingestion), de-duplication by ``msg_id``
(``seen_messages``). The handler registry other modules extend (``register_handler``) and the
batch live in centre/ingest_batch.py and are re-exported here.

The MQTT link hands messages one by one to ``Ingest.take`` (on the event loop: parse only, no I/O);
the service ``detach``es the pending batch at each link commit and calls ``Ingest.flush`` in ONE
worker thread (batches commit in order): one transaction, one ``executemany`` per statement
(centre/ingest_write.py).

Extension point: ``register_handler("health", handler)`` makes messages on
``district/v1/<gateway>/health`` (and ``health/...``, longest registered class wins) go to
``handler(tx, gateway, body, now)`` inside the batch's transaction, after de-duplication by the
body's ``msg_id`` when it has one. ``body`` is the decoded JSON object (a dict, ``v`` checked);
``now`` the centre's receive time. A handler raising ``RejectedError(reason, detail)`` rejects the
message (counted); any other exception rolls the batch back (it is delivered again).
Must not import: the service, the console, the rollout driver.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import msgspec

from centre.config import TOPIC_ROOT
from centre.db import Database
from centre.ingest_batch import HANDLERS, Batch, Handler, Item, RejectedError, merge, register_handler, run_extra
from centre.ingest_write import write_batch
from edge_agent.models import MAX_PAYLOAD_BYTES, AlertMessage, Count, LampState, Message, PolicyAck

log = logging.getLogger(__name__)

LOG_EVERY_S = 60.0  # a flood of one kind of bad message logs one line a minute (all are counted)

__all__ = [
    "HANDLERS", "Batch", "Handler", "Ingest", "IngestStats", "Item", "RejectedError", "merge", "register_handler",
    "run_extra",
]  # fmt: skip


# ----- the payloads ---------------------------------------------------------------------------
class NorthAlert(AlertMessage, frozen=True, kw_only=True):
    msg_id: str


class Telemetry(LampState, frozen=True, kw_only=True):
    msg_id: str
    group: str = ""
    gateway: str | None = None


class NorthAck(PolicyAck, frozen=True, kw_only=True):
    msg_id: str | None = None


class RolloutSummary(Message, frozen=True, kw_only=True):
    policy_version: int | None = None
    lamps: Count = 0
    on_version: Count = 0
    msg_id: str | None = None


class ShadowNorth(Message, frozen=True, kw_only=True):
    candidate: Annotated[str, msgspec.Meta(min_length=1)]
    days: list[dict[str, Any]]
    msg_id: str | None = None


class Versioned(Message, frozen=True, kw_only=True):
    msg_id: str | None = None


_decoders: dict[type[Any], msgspec.json.Decoder[Any]] = {
    schema: msgspec.json.Decoder(schema)
    for schema in (NorthAlert, Telemetry, NorthAck, RolloutSummary, ShadowNorth, Versioned)
}
_any = msgspec.json.Decoder()


@dataclass
class IngestStats:
    taken: int = 0
    duplicates: int = 0
    rejected: int = 0
    batches: int = 0
    events: Counter[str] = field(default_factory=Counter)  # event/<topic> messages per gateway


class Ingest:
    """Parse on the loop (``take``), write per batch (``flush``, in one worker thread)."""

    def __init__(self, db: Database, district: str, *, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.district = district
        self.clock = clock
        self.stats = IngestStats()
        self._batch = Batch()
        self._root = TOPIC_ROOT + "/"
        self._logged: dict[tuple[str, str], float] = {}

    # ----- parsing ------------------------------------------------------------------------------
    def take(self, topic: str, payload: bytes) -> None:
        """Parse one message into the pending batch (a bad one into its reject counters)."""
        now = self.clock()
        if not topic.startswith(self._root):
            self._reject("foreign_topic", "?", topic, now)
            return
        parts = topic[len(self._root) :].split("/")
        if len(parts) < 2 or not parts[0] or not all(parts[1:]):
            self._reject("bad_topic", "?", topic, now)
            return
        gateway, rest = parts[0], parts[1:]
        head = rest[0]
        try:
            item = self._parse(gateway, head, rest, payload, now)
        except RejectedError as exc:
            self._reject(exc.reason, _class_name(rest), f"{topic}: {exc.detail}", now)
            return
        self._batch.items.append(item)
        self.stats.taken += 1

    def _parse(self, gateway: str, head: str, rest: list[str], payload: bytes, now: float) -> Item:
        n = len(rest)
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise RejectedError("oversized", f"{len(payload)} bytes")
        if n == 1 and head == "status":
            text = payload.decode("utf-8", "replace").strip()
            if text not in ("online", "offline"):
                raise RejectedError("schema", "status is 'online' or 'offline'")
            return Item("status", gateway, None, text == "online", now)
        extra = self._extra(rest)
        if extra is not None:
            body = _decode(Versioned, payload)
            data = _any.decode(payload)
            return Item("extra", gateway, body.msg_id, data, now, lamp=extra)
        if n == 1 and head == "alert":
            alert = _decode(NorthAlert, payload)
            _same_gateway(gateway, alert.gateway)
            return Item("alert", gateway, alert.msg_id, alert, now, raw=payload)
        if n == 3 and head == "telemetry" and rest[1] == "lamp":
            telemetry = _decode(Telemetry, payload)
            _same_gateway(gateway, telemetry.gateway)
            return Item("telemetry", gateway, telemetry.msg_id, telemetry, now, lamp=rest[2], raw=payload)
        if n == 2 and head == "policy" and rest[1] == "ack":
            ack = _decode(NorthAck, payload)
            _same_gateway(gateway, ack.gateway)
            return Item("policy_ack", gateway, ack.msg_id, ack, now)
        if n == 1 and head == "rollout":
            summary = _decode(RolloutSummary, payload)
            return Item("rollout", gateway, summary.msg_id, summary, now)
        if n == 2 and head == "shadow" and rest[1] == "report":
            report = _decode(ShadowNorth, payload)
            for day in report.days:
                if not isinstance(day.get("day"), str):
                    raise RejectedError("schema", "every day needs a 'day' string - at `$.days`")
            return Item("shadow", gateway, report.msg_id, report, now)
        if n >= 2 and head == "event":
            body = _decode(Versioned, payload)
            return Item("event", gateway, body.msg_id, "/".join(rest[1:]), now)
        if n == 1 and head == "policy":
            raise RejectedError("not_north", "the centre's own policy topic")
        raise RejectedError("unknown_class", "no such north topic class")

    def _extra(self, rest: list[str]) -> str | None:
        if not HANDLERS:
            return None
        for end in range(len(rest), 0, -1):
            name = "/".join(rest[:end])
            if name in HANDLERS:
                return name
        return None

    def reject(self, reason: str, topic_class: str, detail: str) -> None:
        """Count a message as rejected (written with the pending batch)."""
        self._reject(reason, topic_class, detail, self.clock())

    def _reject(self, reason: str, topic_class: str, detail: str, now: float) -> None:
        key = (reason, topic_class)
        batch = self._batch
        if now - self._logged.get(key, -LOG_EVERY_S) >= LOG_EVERY_S:  # one line per reason a minute
            self._logged[key] = now
            log.warning("rejected north message (%s): %s", reason, detail[:300])
        batch.rejects[key] += 1
        batch.reject_detail[key] = (detail[:500], now)
        self.stats.rejected += 1

    # ----- writing ------------------------------------------------------------------------------
    def detach(self) -> Batch:
        """The pending batch, and a new empty one for the messages that follow."""
        batch, self._batch = self._batch, Batch()
        return batch

    def flush(self, batch: Batch) -> int:
        """Write one batch in one transaction (raises on a database error: nothing written);
        the number of its messages skipped as duplicates."""
        if not batch.items and not batch.rejects:
            return 0
        with self.db.transaction() as tx:
            duplicates = write_batch(tx, batch, self.db.dialect)
        self.stats.duplicates += duplicates
        self.stats.batches += 1
        for item in batch.items:
            if item.kind == "event":
                self.stats.events[item.gateway] += 1
        return duplicates


def _class_name(rest: list[str]) -> str:
    head = rest[0]
    if head in ("telemetry", "policy", "shadow") and len(rest) > 1:
        return f"{head}/{rest[1]}"
    return head[:40]


def _same_gateway(topic_gateway: str, body_gateway: str | None) -> None:
    if body_gateway is not None and body_gateway != topic_gateway:
        raise RejectedError("gateway_mismatch", f"body says {body_gateway!r}")


def _decode(schema: type[Any], payload: bytes) -> Any:
    try:
        return _decoders[schema].decode(payload)
    except msgspec.ValidationError as exc:
        text = str(exc)
        reason = "bad_version" if "`$.v`" in text else "schema"
        message, _, path = text.partition(" - at ")
        if not message.startswith(("Expected ", "Object missing required field ")):
            message = "invalid value"  # msgspec may echo a value; never log a payload's values
        raise RejectedError(reason, f"{message} - at {path}" if path else message) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise RejectedError("bad_json", str(exc)) from None
    except RecursionError:
        raise RejectedError("bad_json", "nesting too deep") from None
