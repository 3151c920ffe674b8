"""Who is available, notified or busy, and which responder an incident gets: one state machine
for the gateway's engine and the twin's dispatcher.

Owns: the dispatch state of one gateway (or one twin district) and its transitions. Pure and
deterministic: no I/O, no clock of its own, no asyncio. Every input is an event with its time
``t`` (in the caller's unit: the gateway's seconds, the twin's minutes; durations in the chains
are in the same unit) and ``clock``, the local time of day of ``t`` in minutes (0-1440), which
the caller computes (the gateway from its time zone, the twin from its own time axis). Every
output is a list of ``Decision``: the caller applies them (store, messages, timers; or SimPy
timeouts) and calls back with the events they cause (an ack, an ack timeout, ...).

A responder is ``available``, ``notified`` (asked about one alert, not yet answered) or
``busy`` (acknowledged an alert, until it is resolved or its resolve timeout passes); an
available responder outside their daily shift is ``off_shift`` and is never chosen.

An incident walks its chain's roles (``choose_responder``: the nearest available, on-shift
responder of the role at the current step). Nobody at that step -> the next role at once
(cyclically, each role tried once); nobody in the whole chain -> the alert is ``queued``
(FIFO) and the first responder of the chain to come free or start a shift takes it. No
acknowledgement within the chain's ``ack_timeout`` -> the responder is released and the alert
escalates to the next role (after the last one: back to the first, or the last again when the
chain says ``repeat_last``). An acknowledgement makes the responder busy until ``resolve``
or, failing that, ``resolve_timeout`` after the acknowledgement.

Must not import: anything but edge_agent.policy.dispatch (the twin imports this module).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from edge_agent.policy.dispatch import choose_responder

DAY_MINUTES = 1440.0
FULL_DAY = (0.0, DAY_MINUTES)

AVAILABLE = "available"
NOTIFIED = "notified"
BUSY = "busy"
OFF_SHIFT = "off_shift"

# Decision kinds
NOTIFY = "notify"  # responder notified about alert at step; due: when the ack timeout falls
QUEUED = "queued"  # nobody of the chain is free: the alert waits (FIFO)
ACKNOWLEDGED = "acknowledged"  # responder busy with alert; due: the resolve deadline (inf: none)
ACK_TIMEOUT = "ack_timeout"  # responder released: no ack in time (the alert's next step follows)
SUPERSEDED = "superseded"  # responder released: someone else acknowledged the alert
RESOLVED = "resolved"  # responder free again: the alert is closed
RESOLVE_TIMEOUT = "resolve_timeout"  # responder free again: no resolve within resolve_timeout


def parse_shift(text: str) -> tuple[float, float]:
    """``"08:00-20:00"`` -> (480, 1200) local clock minutes; may wrap midnight (``"20:00-08:00"``)."""
    try:
        a, b = text.split("-")
        ha, ma = (int(v) for v in a.strip().split(":"))
        hb, mb = (int(v) for v in b.strip().split(":"))
    except ValueError:
        raise ValueError(f"expected a shift such as '08:00-20:00', got {text!r}") from None
    if not (0 <= ha <= 24 and 0 <= hb <= 24 and 0 <= ma < 60 and 0 <= mb < 60):
        raise ValueError(f"shift out of range: {text!r}")
    return ha * 60.0 + ma, hb * 60.0 + mb


def full_day(shift: tuple[float, float]) -> bool:
    return shift[1] - shift[0] >= DAY_MINUTES


def on_shift(shift: tuple[float, float], clock: float) -> bool:
    """Whether local clock minute ``clock`` (0-1440) is within the daily ``shift``."""
    start, end = shift
    if end - start >= DAY_MINUTES:
        return True
    clock %= DAY_MINUTES
    if start <= end:
        return start <= clock < end
    return clock >= start or clock < end


def minutes_to_shift_start(shift: tuple[float, float], clock: float) -> float:
    """Minutes from local clock minute ``clock`` to the next start of ``shift`` (0 < m <= 1440).

    Callers schedule the next start from one minute past the last one, so a clock that reads
    a hair before the start does not fire it twice."""
    return (shift[0] - clock) % DAY_MINUTES or DAY_MINUTES


@dataclass(frozen=True, slots=True)
class DispatchResponder:
    role: str
    x: float
    y: float
    shift: tuple[float, float] = FULL_DAY  # local clock minutes; may wrap midnight


@dataclass(frozen=True, slots=True)
class DispatchChain:
    roles: tuple[str, ...]
    ack_timeout: float  # the caller's time unit
    resolve_timeout: float = math.inf
    repeat_last: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    t: float
    kind: str
    alert: str
    responder: int = -1
    step: int = -1
    due: float = math.inf  # NOTIFY: ack timeout; ACKNOWLEDGED: resolve deadline
    n: int = 0  # NOTIFY: the alert's notification count (the token of its ack timeout)
    skipped: int = 0  # NOTIFY / QUEUED: chain steps skipped at once, nobody available


@dataclass(slots=True)
class AlertState:
    alert: str
    chain: str
    x: float
    y: float
    status: str = QUEUED  # NOTIFIED, QUEUED or ACKNOWLEDGED while open
    step: int = 0
    responder: int = -1
    notifications: int = 0
    created: float = 0.0  # the incident's time: the canonical order of simultaneous timers


@dataclass(frozen=True, slots=True)
class Due:
    """A timer event for ``due_together``: ``ack_timeout`` (alert, n), ``resolve_timeout``
    (alert) or ``shift_start`` (responder)."""

    kind: str
    alert: str = ""
    n: int = 0
    responder: int = -1


class DispatchState:
    """The dispatch state machine (see the module docstring). Closed alerts are forgotten."""

    def __init__(self, responders: Sequence[DispatchResponder], chains: Mapping[str, DispatchChain]) -> None:
        self.responders = tuple(responders)
        self.chains = dict(chains)
        self.n = len(self.responders)
        self.rx = tuple(r.x for r in self.responders)
        self.ry = tuple(r.y for r in self.responders)
        self.shifts = tuple(r.shift for r in self.responders)
        self.ranks = {
            name: tuple(chain.roles.index(r.role) if r.role in chain.roles else -1 for r in self.responders)
            for name, chain in self.chains.items()
        }
        self.holding: list[str | None] = [None] * self.n  # the alert a responder is notified of / busy with
        self.alerts: dict[str, AlertState] = {}
        self.queue: list[str] = []  # queued alerts, oldest first

    # ----- queries ------------------------------------------------------------------------
    def state(self, i: int, clock: float) -> str:
        held = self.holding[i]
        if held is not None:
            return BUSY if self.alerts[held].status == ACKNOWLEDGED else NOTIFIED
        return AVAILABLE if on_shift(self.shifts[i], clock) else OFF_SHIFT

    def available(self, clock: float) -> tuple[bool, ...]:
        return tuple(self.holding[i] is None and on_shift(self.shifts[i], clock) for i in range(self.n))

    # ----- events -------------------------------------------------------------------------
    def incident(self, t: float, clock: float, alert: str, x: float, y: float, chain: str) -> list[Decision]:
        """A new alert to dispatch along ``chain`` from the incident's location ``x``, ``y``."""
        if alert in self.alerts:
            return []
        self.alerts[alert] = AlertState(alert, chain, x, y, created=t)
        out: list[Decision] = []
        self._assign(t, clock, self.alerts[alert], 0, out)
        return out

    def ack(self, t: float, clock: float, alert: str, responder: int) -> list[Decision]:
        """``responder`` acknowledged ``alert``. Accepted from the notified responder, or from an
        available one (a late answer, or someone who saw it elsewhere); otherwise ignored."""
        state = self.alerts.get(alert)
        if state is None or state.status == ACKNOWLEDGED or not 0 <= responder < self.n:
            return []
        notified = state.responder if state.status == NOTIFIED else -1
        if responder != notified and self.holding[responder] is not None:
            return []
        if state.status == QUEUED:
            self.queue.remove(alert)
        chain = self.chains[state.chain]
        state.status = ACKNOWLEDGED
        state.responder = responder
        self.holding[responder] = alert
        out = [Decision(t, ACKNOWLEDGED, alert, responder, state.step, t + chain.resolve_timeout)]
        if notified >= 0 and notified != responder:
            self.holding[notified] = None
            out.append(Decision(t, SUPERSEDED, alert, notified, state.step))
            self._offer(t, clock, notified, out)
        return out

    def ack_timeout(self, t: float, clock: float, alert: str, n: int) -> list[Decision]:
        """The ack timeout of ``alert``'s ``n``-th notification fell (stale ones change nothing)."""
        state = self.alerts.get(alert)
        if state is None or state.status != NOTIFIED or state.notifications != n:
            return []
        i = state.responder
        self.holding[i] = None
        out = [Decision(t, ACK_TIMEOUT, alert, i, state.step)]
        self._offer(t, clock, i, out)
        chain = self.chains[state.chain]
        last = len(chain.roles) - 1
        step = state.step
        if step < last:
            step += 1
        elif not chain.repeat_last:
            step = 0
        self._assign(t, clock, state, step, out)
        return out

    def unreachable(self, t: float, clock: float, alert: str, n: int) -> list[Decision]:
        """No channel reached the responder of ``alert``'s ``n``-th notification: its ack timeout
        falls now, unless the step is the chain's last (a new round, or the last role again, waits
        for the ack timeout: with nobody reachable, calling at once would go round without end)."""
        state = self.alerts.get(alert)
        if state is None or state.status != NOTIFIED or state.notifications != n:
            return []
        if state.step >= len(self.chains[state.chain].roles) - 1:
            return []
        return self.ack_timeout(t, clock, alert, n)

    def resolve(self, t: float, clock: float, alert: str, responder: int = -1) -> list[Decision]:
        """The busy responder resolved ``alert`` (``responder`` -1: whoever holds it)."""
        return self._close(t, clock, alert, responder, RESOLVED)

    def resolve_timeout(self, t: float, clock: float, alert: str) -> list[Decision]:
        """No resolve came within the chain's ``resolve_timeout`` of the acknowledgement."""
        return self._close(t, clock, alert, -1, RESOLVE_TIMEOUT)

    def shift_start(self, t: float, clock: float, responder: int) -> list[Decision]:
        """``responder``'s shift starts: they take the oldest queued alert they can serve."""
        out: list[Decision] = []
        self._offer(t, clock, responder, out, started=True)
        return out

    def due_together(self, t: float, clock: float, events: Sequence[Due]) -> list[Decision]:
        """Timer events that fall at the same instant, in one canonical order whatever order
        the caller's timers hold them in: alert timers by the alert's incident time (then id),
        then shift starts by responder. Stale events change nothing."""

        def order(event: Due) -> tuple[int, float, str, int]:
            if event.kind == "shift_start":
                return (1, 0.0, "", event.responder)
            state = self.alerts.get(event.alert)
            return (0, state.created if state is not None else 0.0, event.alert, event.n)

        out: list[Decision] = []
        for event in sorted(events, key=order):
            if event.kind == "ack_timeout":
                out.extend(self.ack_timeout(t, clock, event.alert, event.n))
            elif event.kind == "resolve_timeout":
                out.extend(self.resolve_timeout(t, clock, event.alert))
            else:
                out.extend(self.shift_start(t, clock, event.responder))
        return out

    def offer_all(self, t: float, clock: float) -> list[Decision]:
        """Every available, on-shift responder takes a queued alert (after a restart)."""
        out: list[Decision] = []
        for i in range(self.n):
            self._offer(t, clock, i, out)
        return out

    def restore(
        self,
        alert: str,
        chain: str,
        x: float,
        y: float,
        status: str,
        step: int,
        responder: int,
        notifications: int,
        created: float,
    ) -> None:
        """Rebuild one open alert after a restart (call in queue order for queued ones)."""
        if chain not in self.chains:
            return
        state = AlertState(alert, chain, x, y, status, step, responder, notifications, created)
        if status in (NOTIFIED, ACKNOWLEDGED) and 0 <= responder < self.n and self.holding[responder] is None:
            self.holding[responder] = alert
        elif status in (NOTIFIED, ACKNOWLEDGED):  # its responder left the config, or is taken
            state.status, state.responder = QUEUED, -1
        if state.status == QUEUED:
            self.queue.append(alert)
        self.alerts[alert] = state

    # ----- internals ----------------------------------------------------------------------
    def _close(self, t: float, clock: float, alert: str, responder: int, kind: str) -> list[Decision]:
        state = self.alerts.get(alert)
        if state is None or state.status != ACKNOWLEDGED or responder not in (-1, state.responder):
            return []
        i = state.responder
        self.holding[i] = None
        del self.alerts[alert]
        out = [Decision(t, kind, alert, i, state.step)]
        self._offer(t, clock, i, out)
        return out

    def _assign(self, t: float, clock: float, state: AlertState, step: int, out: list[Decision]) -> None:
        """Notify the nearest available responder from ``step`` on; nobody -> queue the alert."""
        chain = self.chains[state.chain]
        ranks = self.ranks[state.chain]
        last = len(chain.roles) - 1
        available = self.available(clock)
        for skipped in range(last + 1):
            i = choose_responder(state.x, state.y, self.rx, self.ry, available, ranks, self.n, step)
            if i >= 0:
                self._notify(t, state, i, step, skipped, out)
                return
            step = step + 1 if step < last else 0
        state.status, state.responder = QUEUED, -1
        self.queue.append(state.alert)
        out.append(Decision(t, QUEUED, state.alert, -1, state.step, skipped=last))

    def _notify(self, t: float, state: AlertState, i: int, step: int, skipped: int, out: list[Decision]) -> None:
        state.status, state.step, state.responder = NOTIFIED, step, i
        state.notifications += 1
        self.holding[i] = state.alert
        due = t + self.chains[state.chain].ack_timeout
        out.append(Decision(t, NOTIFY, state.alert, i, step, due, state.notifications, skipped))

    def _offer(self, t: float, clock: float, i: int, out: list[Decision], *, started: bool = False) -> None:
        """A newly free (or newly on-shift) responder takes the oldest queued alert it can serve."""
        if self.holding[i] is not None or not (started or on_shift(self.shifts[i], clock)):
            return
        for alert in self.queue:
            state = self.alerts[alert]
            rank = self.ranks[state.chain][i]
            if rank >= 0:
                self.queue.remove(alert)
                self._notify(t, state, i, rank, 0, out)
                return
