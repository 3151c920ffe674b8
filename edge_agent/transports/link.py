"""The link seam: what the agent uses of a message link, whatever carries the messages.

Owns: ``Link`` (what the agent's flows call: publish, publish many, connected, wait for the
connection), ``ServedLink`` (a link the agent runs and whose health its status page reads),
``LinkSpec`` and ``LinkFactory`` (how the agent asks for its south and north links), and the
inbound contract both sides keep: a ``MessageHandler`` answers True (handled), False (not
handled: not acknowledged, delivered again) or ``SYNC`` (handled, durable once ``commit``
says so); the link calls ``Commit`` once per batch and acknowledges the batch only after it.
Implemented by edge_agent/transports/mqtt.py (``MqttLink``, a broker) and
edge_agent/transports/inprocess.py (``InProcessLink``, a bus inside this process).
Must not import: anything of ours.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Literal, Protocol

# A handler returns True (handled), False (could not be handled: not acknowledged, the broker
# delivers it again after the next reconnect) or SYNC (handled, durable once ``commit`` says
# so). The link commits before it acknowledges anything, and before it waits for anything.
SYNC: Literal["sync"] = "sync"
Handled = bool | Literal["sync"] | None
MessageHandler = Callable[[str, bytes], Awaitable[Handled]]
# commits what the handled messages caused: False (failed), True (nothing to wait for) or an
# awaitable that resolves once it is on disk (True) or failed (False)
Commit = Callable[[], bool | Awaitable[bool]]
Outgoing = tuple[str, bytes, int, bool]  # topic, payload, qos, retain


class Link(Protocol):
    """What the agent's flows use of a link."""

    @property
    def name(self) -> str: ...

    @property
    def connected(self) -> bool:
        """True only while the link is up: a publish now has a chance."""
        ...

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Return once connected; TransportError after ``timeout`` seconds."""
        ...

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Return once the message was taken (QoS 1: acknowledged); TransportError if the link is
        down or goes down first, PublishRefused (a TransportError) if it was refused."""
        ...

    async def publish_many(self, messages: Sequence[Outgoing]) -> list[Exception | None]:
        """Publish in order; per message None (taken) or why not (PublishRefused,
        TransportError). TransportError if the link is down before the first one."""
        ...


class ServedLink(Link, Protocol):
    """A link as the agent holds it: run for as long as the agent runs, its health on the
    status page and in the metrics."""

    on_published: Callable[[str], None] | None  # called with the topic of every publish taken
    connects: int  # sessions established
    failures: int  # connection attempts that failed
    last_error: str | None
    refused: Counter[str]  # what the other side refused, by reason
    unhandled: int  # inbound messages the handler could not handle or commit

    @property
    def address(self) -> str:
        """Where the link goes, for people ("host:port")."""
        ...

    async def run(self) -> None:
        """Connect, serve inbound messages, reconnect; until cancelled."""
        ...


@dataclass(frozen=True)
class LinkSpec:
    """What the agent needs of one link: its name ("south" or "north"), what it subscribes
    to, who handles and commits what comes in, and who hears of its connects and publishes."""

    name: str
    subscriptions: list[tuple[str, int]]
    on_message: MessageHandler
    commit: Commit
    on_connect: Callable[[], None] | None = None
    on_published: Callable[[str], None] | None = None


class LinkFactory(Protocol):
    """Makes the agent's links for one run. ``open`` is entered once per run (what it starts,
    such as an embedded broker, lives that long) and gives the function that makes each link."""

    def open(self) -> AbstractAsyncContextManager[Callable[[LinkSpec], ServedLink]]: ...


def raise_if_cancelled() -> None:
    """Raise the cancellation a library turned into an ordinary error: Python 3.11's
    ``asyncio.wait_for`` (aiomqtt's connect uses it) returns the awaited future's result or error
    when that future completes just as the task is cancelled. A loop that catches the error and
    goes on would never stop; call this where it catches."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
