"""The engine's timers in memory: every pending timer by id, and a heap of due times.

Owns: which timers are pending and which is due next. ``put`` persists the timer in the store
(inside the caller's transaction) and ``drop`` deletes it there; ``schedule`` keeps one in
memory only (time and sun triggers, boosts, shift starts: computed again at each start). The
heap may hold stale entries (a timer replaced or dropped): they are skipped when they surface.
"""

from __future__ import annotations

import heapq

from edge_agent.store.timers import Timer, Timers

FOREVER = 1e300  # due time of a latch: persisted, never fires


class TimerQueue:
    def __init__(self, store: Timers) -> None:
        self.persisted = store
        self.pending: dict[str, Timer] = {}
        self._heap: list[tuple[float, str]] = []

    def load(self) -> list[Timer]:
        """The persisted timers, pending again (after a restart)."""
        timers = self.persisted.all()
        for timer in timers:
            self.schedule(timer)
        return timers

    def put(self, timer: Timer) -> None:
        """A persisted timer (replacing any of the same id)."""
        self.pending[timer.timer_id] = timer
        self.persisted.put(timer)
        heapq.heappush(self._heap, (timer.due, timer.timer_id))

    def schedule(self, timer: Timer) -> None:
        """An in-memory timer (not persisted)."""
        self.pending[timer.timer_id] = timer
        heapq.heappush(self._heap, (timer.due, timer.timer_id))

    def drop(self, key: str) -> None:
        """Forget a persisted timer (nothing if it is not pending)."""
        if self.pending.pop(key, None) is not None:
            self.persisted.delete(key)

    def forget(self, key: str) -> None:
        """Forget an in-memory timer."""
        del self.pending[key]

    def next_due(self) -> float | None:
        """When the next timer is due (None: none, or only latches)."""
        heap = self._heap
        while heap:
            due, key = heap[0]
            timer = self.pending.get(key)
            if timer is None or timer.due != due:
                heapq.heappop(heap)  # stale entry
                continue
            return due if due < FOREVER else None
        return None

    def pop(self) -> Timer:
        """The timer :meth:`next_due` found (still pending: the caller drops or forgets it)."""
        _, key = heapq.heappop(self._heap)
        return self.pending[key]
