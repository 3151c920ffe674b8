"""The gateway's local alarm: a promise it cannot keep, told to the operator on the south broker.

Owns: ``Alarm`` (log, count, hold in memory and publish on the ``alarm`` topic once the south
link is up). Shared by the flows through ``GatewayContext``.
Must not import: the flows (intake, outbound, lamps, loops, policy_install) or the app.
"""

from __future__ import annotations

import asyncio
import collections
import logging

import msgspec

from edge_agent.agent import topics
from edge_agent.agent.runtime import AgentStats, Background, Links
from edge_agent.clock import Clock
from edge_agent.errors import PublishRefused, TransportError
from edge_agent.transports.link import Link

log = logging.getLogger("edge_agent")


class Alarm:
    """A local alarm: the gateway cannot keep a promise (e.g. an alert cannot be stored).

    Logged as critical, counted, and published on the local broker (``alarm``), which works
    without the store and without the uplink. The store may be the thing that failed, so the
    alarm is not an outbox row: it is held in memory (the newest ``KEEP``) and published as
    soon as the south link is up, retried while it is down (a storage failure makes the link
    reconnect so the broker delivers the message again: exactly when the alarm must not be
    dropped).
    """

    KEEP = 100  # alarms waiting for the south link; beyond that the oldest are only logged
    RETRY_S = 0.5

    def __init__(self, gateway: str, clock: Clock, links: Links, stats: AgentStats, background: Background) -> None:
        self.gateway = gateway
        self.clock = clock
        self.links = links
        self.stats = stats
        self.background = background
        self._waiting: collections.deque[bytes] = collections.deque(maxlen=self.KEEP)
        self._sending = False

    def sound(self, reason: str, detail: str) -> None:
        self.stats.alarms[reason] += 1
        log.critical("ALARM %s: %s", reason, detail)
        self._waiting.append(msgspec.json.encode({"v": 1, "ts": self.clock.now(), "reason": reason, "detail": detail}))
        if not self._sending and self.links.south is not None:
            self._sending = True
            self.background.spawn(self._send(self.links.south))

    async def _send(self, link: Link) -> None:
        try:
            while self._waiting:
                await link.wait_connected()
                try:
                    await link.publish(topics.alarm(self.gateway), self._waiting[0], qos=1)
                except PublishRefused as exc:  # the broker's ACL: retrying cannot help; it is logged
                    log.critical("the south broker refused the alarm (%s); it stays in the log only", exc.reason)
                except TransportError as exc:  # the link went down meanwhile: again once it is up
                    log.debug("alarm not published yet: %s", exc)
                    await asyncio.sleep(self.RETRY_S)
                    continue
                self._waiting.popleft()
        finally:
            self._sending = False
