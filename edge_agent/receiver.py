"""The receiving side of a gateway's outbox, for the city platform (and our tests).

Owns: turning at-least-once delivery into exactly-once processing. Every northbound message
carries the gateway's own ``msg_id`` (stable across retries and reconnects) and a per-device
``seq``. ``Receiver.accept`` drops a message whose id it has seen (within a bounded window)
and keeps, per (gateway, device), the sequence numbers still missing, so a gap (a lost
message) can be told from a late one.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import msgspec

from edge_agent.errors import ProtocolError


@dataclass
class _Stream:
    highest: int = 0
    missing: set[int] = field(default_factory=set)


class Receiver:
    def __init__(self, window: int = 200_000) -> None:
        self.window = window
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._streams: dict[tuple[str, str], _Stream] = {}
        self.accepted = 0
        self.duplicates = 0
        self.late = 0

    def accept(self, payload: bytes | dict[str, Any]) -> dict[str, Any] | None:
        """The message if it is new, None if it is a duplicate. ProtocolError if it has no id."""
        message = msgspec.json.decode(payload) if isinstance(payload, bytes) else payload
        if not isinstance(message, dict):
            raise ProtocolError("schema", detail="expected a JSON object")
        msg_id, seq = message.get("msg_id"), message.get("seq")
        if not isinstance(msg_id, str) or not isinstance(seq, int):
            raise ProtocolError("schema", detail="a northbound message needs 'msg_id' and 'seq'")
        if msg_id in self._seen:
            self.duplicates += 1
            return None
        self._seen[msg_id] = None
        if len(self._seen) > self.window:
            self._seen.popitem(last=False)
        key = (str(message.get("gateway", "")), str(message.get("device", "")))
        stream = self._streams.setdefault(key, _Stream())
        if seq > stream.highest:
            stream.missing.update(range(stream.highest + 1, seq))
            stream.highest = seq
        elif seq in stream.missing:
            stream.missing.discard(seq)
            self.late += 1
        self.accepted += 1
        return message

    def gaps(self) -> dict[tuple[str, str], list[int]]:
        """Per (gateway, device): sequence numbers not received (yet)."""
        return {key: sorted(s.missing) for key, s in self._streams.items() if s.missing}

    def highest(self, gateway: str, device: str) -> int:
        stream = self._streams.get((gateway, device))
        return stream.highest if stream else 0
