"""The agent's clockwork: timers and the lighting minute, and the periodic flush.

Owns: firing the engine's due timers and re-deciding lamp levels at each minute of the
timeline (woken early when a handled event moved a timer), and writing what can wait (traces,
the device state, reject counters) in batches, once a second and at shutdown.
Must not import: the app or the other flows; effects go out through the ``apply`` it is handed.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING

from edge_agent.agent.context import GatewayContext
from edge_agent.engine import Effect

if TYPE_CHECKING:
    from edge_agent.agent.shadow import Shadow

log = logging.getLogger("edge_agent")

STORE_RETRY_S = 1.0  # after the store refused a commit, before the next attempt


async def run_timers(
    context: GatewayContext, apply: Callable[[list[Effect]], None], shadow: Shadow | None = None
) -> None:
    """Fire due timers and re-decide lamp levels at each minute of the timeline. A store that
    refuses the commit sounds the alarm; what was due is tried again (it stays due). A
    ``shadow`` (shadow mode) is told each committed wake-up, after the commit."""
    clock, store, active, timers_changed = context.clock, context.store, context.active, context.timers_changed
    next_minute = (clock.now() // 60.0 + 1.0) * 60.0
    while True:
        due = active.engine.next_due()
        wake_at = next_minute if due is None else min(due, next_minute)
        timers_changed.clear()
        sleeper = asyncio.ensure_future(clock.sleep_until(wake_at))
        changed = asyncio.ensure_future(timers_changed.wait())
        await asyncio.wait({sleeper, changed}, return_when=asyncio.FIRST_COMPLETED)
        for task in (sleeper, changed):
            task.cancel()
        now = clock.now()
        try:
            with store.transaction():
                engine = active.engine
                effects = engine.fire_due(now)
                minute = now >= next_minute
                if minute:
                    effects.extend(engine.tick_lighting(now))
                    next_minute = (now // 60.0 + 1.0) * 60.0
                apply(effects)
        except sqlite3.Error as exc:  # a store that refuses writes: alarm, and again in a moment
            context.alarm.sound("storage", f"timers and the lighting minute cannot be stored: {exc}")
            await asyncio.sleep(STORE_RETRY_S)
        else:
            if shadow is not None:
                shadow.on_time(now, effects, minute)


class Flusher:
    INBOX_KEEP_S = 7 * 86400.0  # how long a wearable's (device, seq) is remembered for redelivery

    def __init__(self, context: GatewayContext) -> None:
        self.stats = context.stats  # rule run latencies, from the traces, for the metrics
        self.clock = context.clock
        self.store = context.store
        self.active = context.active
        self.unflushed = context.unflushed
        self.traces_per_rule = context.limits.traces_per_rule

    async def run(self) -> None:
        flushes = 0
        while True:
            await asyncio.sleep(1.0)
            self.flush()
            flushes += 1
            if flushes % 600 == 0:  # every ten minutes: forget redelivery ids older than a week
                try:
                    with self.store.transaction(durable=False):
                        self.store.inbox.prune(self.clock.now() - self.INBOX_KEEP_S)
                except sqlite3.Error as exc:  # next time
                    log.warning("inbox not pruned: %s", exc)

    def flush(self) -> None:
        try:
            traces = self.active.engine.take_traces()
            for trace in traces:  # acks and escalations are bookkeeping, not rule runs
                if trace["trigger"].get("type") not in ("ack", "escalation", "unreachable"):
                    self.stats.rule_seconds.observe(trace["duration_us"] / 1e6)
            self.store.rule_traces.add(traces, self.traces_per_rule)
            now = self.clock.now()
            pending = self.unflushed
            if pending.reported or pending.desired:
                with self.store.transaction(durable=False):
                    for device, reported in pending.reported.items():
                        self.store.device_state.set_reported(device, reported, now)
                    for device, desired in pending.desired.items():
                        self.store.device_state.set_desired(device, desired, now)
                pending.reported.clear()
                pending.desired.clear()
            if pending.rejects:
                self.store.counters.add({f"rejected.{k}": v for k, v in pending.rejects.items()})
                pending.rejects.clear()
        except Exception:
            log.exception("flush failed")
