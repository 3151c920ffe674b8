"""Small objects the agent's flows share; the composition root hands them to each flow in one
``context.GatewayContext``.

Owns: the agent's counters (``AgentStats``), the engine in force (``ActivePolicy``, swapped
when a policy is installed), the two links and their outbox wake-ups (``Links``), the
device-state and counter writes batched for the flush loop (``Unflushed``) and fire-and-forget
publishes (``Background``).
Must not import: the flows (intake, outbound, lamps, loops, policy_install) or the app.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from edge_agent.agent import topics
from edge_agent.engine import Engine
from edge_agent.histogram import RULE_BUCKETS_S, LatencyHistogram
from edge_agent.notify.report import NotifyLink
from edge_agent.transports.link import Link, ServedLink

log = logging.getLogger("edge_agent")


@dataclass
class AgentStats:
    received: int = 0
    duplicates: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    sms_replies: Counter[str] = field(default_factory=Counter)  # replies that acknowledged or resolved
    notify_failed: Counter[str] = field(default_factory=Counter)  # by link: messages a channel could not take or send
    push_acks: Counter[str] = field(default_factory=Counter)  # push links that acknowledged or resolved
    alarms: Counter[str] = field(default_factory=Counter)
    seq_gaps: Counter[str] = field(default_factory=Counter)  # by device kind: events missing by their seq
    seq_missed: Counter[str] = field(default_factory=Counter)  # by device (the config's): the same
    broker_dropped: int = 0  # increases of the south broker's $SYS dropped counter seen
    effects: int = 0
    published: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)  # "<link>.<reason>": publishes a broker refused
    # read by the gateway's HTTP face (edge_agent/http): bounded keys only, no per-device labels
    received_by_class: Counter[str] = field(default_factory=Counter)  # inbound, by topics.match class
    sent_by_class: Counter[tuple[str, str]] = field(default_factory=Counter)  # (link, class) PUBACKed
    alerts_raised: int = 0
    alert_changes: Counter[str] = field(default_factory=Counter)  # by the alert's new status
    notifications: int = 0  # responder notifications (first, escalated and repeated)
    sends: Counter[str] = field(default_factory=Counter)  # rules' send actions, by link
    sends_dropped: Counter[str] = field(default_factory=Counter)  # sends without outbox not delivered
    last_seen: dict[str, tuple[float, str]] = field(default_factory=dict)  # device -> (ts, event)
    rule_seconds: LatencyHistogram = field(default_factory=lambda: LatencyHistogram(RULE_BUCKETS_S))


_CLASS_CACHE: dict[tuple[str, str], str] = {}
_CLASS_CACHE_MAX = 4096


def topic_class(gateway: str, topic: str) -> str:
    """The ``topics`` class name of a topic ("lamp_state", ...), "other" if not ours; cached
    (topics are per device: a few hundred), the cache emptied when hostile input fills it."""
    key = (gateway, topic)
    name = _CLASS_CACHE.get(key)
    if name is None:
        found = topics.match(gateway, topic)
        name = found[0].name if found is not None else "other"
        if len(_CLASS_CACHE) >= _CLASS_CACHE_MAX:
            _CLASS_CACHE.clear()
        _CLASS_CACHE[key] = name
    return name


@dataclass
class ActivePolicy:
    """The engine in force and the policy version it runs. Flows read ``engine`` each time:
    installing a policy replaces it."""

    engine: Engine
    version: int


class Links:
    """The south link (always, once running) and the north link (when there is an uplink):
    served links, whose health the status page reads; the flows use them as ``Link``."""

    def __init__(self) -> None:
        self.south: ServedLink | None = None
        self.north: ServedLink | None = None
        # the notification links the gateway has (edge_agent/notify): "modem" (SMS through
        # Gammu's daemon), "ring" (calls on the modem's AT port), "push" (Apprise)
        self.notify: dict[str, NotifyLink] = {}
        # the outbox has new rows for that link
        self.wake = {name: asyncio.Event() for name in ("south", "north", "modem", "ring", "push")}

    @property
    def uplink(self) -> str:
        """The link that carries the platform's topics: north, or south without an uplink."""
        return "north" if self.north is not None else "south"


@dataclass
class Unflushed:
    """Writes that can wait for the flush loop: the device state (desired, reported) and the reject counters."""

    reported: dict[str, dict[str, Any]] = field(default_factory=dict)
    desired: dict[str, dict[str, Any]] = field(default_factory=dict)
    rejects: Counter[str] = field(default_factory=Counter)


class Background:
    """Publishes nobody awaits (lamp commands, programs, alarms): kept referenced until done."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def publish_quietly(link: Link, topic: str, payload: bytes, *, retain: bool = False) -> None:
    """QoS 1 publish whose failure is only logged: the caller's loop sends it again."""
    try:
        await link.publish(topic, payload, qos=1, retain=retain)
    except Exception as exc:  # retried by the loop that called us
        log.debug("publish to %s failed: %s", topic, exc)
