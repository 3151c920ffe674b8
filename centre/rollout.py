"""A rollout's plan and its rules, pure: waves, the abort rule, the time window. No I/O.

Owns: parsing ``--canary``, ``--waves``, ``--abort-if``, ``--window`` and the gateway timeout into
a ``Plan`` (``PlanError`` names the flag and the position of bad input), the deterministic split
of gateways into waves (``assign_waves``), the abort rule's evaluation (``AbortRule.fired``) and
the window test (``Window.contains``).

Wave arithmetic. Wave 0 is the canary: ``--canary N`` gateways (0 allowed: no canary). The
remaining R gateways are split by ``--waves``: each entry is a CUMULATIVE share of R after the
canary, as a percentage (``10%``: ceil(10% of R) gateways done by the end of that wave) or an
absolute count (``5``: 5 gateways done by then, capped at R). Entries must not decrease. The last
wave always takes whatever is left (``--waves 10%,50%`` behaves as ``10%,50%,100%``), and waves
that would be empty are dropped, so every gateway is in exactly one wave.

Which gateways: ordered by SHA-256 of their id (ties impossible; then by id), so the canary is a
stable, spread sample rather than the alphabetically first street, and the same gateway list
always gives the same plan.

Abort rule grammar (AWS IoT Jobs' abort criteria, in one line)::

    rule   := clause ("or" clause)*
    clause := term ("and" term)*
    term   := STATE OP NUMBER ["%"] ["after" INT]
    STATE  := rejected | timed_out | failed          (failed = rejected + timed_out)
    OP     := > | >=

A count (``rejected > 0``) compares the number of gateways in that state. A share
(``timed_out > 10%``) compares it with the gateways that FINISHED so far (SUCCEEDED, REJECTED or
TIMED_OUT, every wave so far). ``after N`` (AWS's minNumberOfExecutedThings) makes a term true
only once at least N gateways finished. ``and`` binds tighter than ``or``. The empty rule never
fires. The driver evaluates the rule when a wave has finished, before the next one starts.

Window: ``HH:MM-HH:MM`` in the district's local time zone (Asia/Shanghai unless told); a wave
STARTS only inside it (a wave in progress is not stopped at its end). ``22:00-05:00`` crosses
midnight. Start == end is refused (say nothing to run at any time).

Must not import: the database, the driver, the CLI, MQTT.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from edge_agent.policy.units import parse_duration

# per-gateway states (AWS IoT Jobs' names)
QUEUED = "QUEUED"
IN_PROGRESS = "IN_PROGRESS"
SUCCEEDED = "SUCCEEDED"
REJECTED = "REJECTED"
TIMED_OUT = "TIMED_OUT"
CANCELED = "CANCELED"
FINISHED = frozenset({SUCCEEDED, REJECTED, TIMED_OUT})
TARGET_STATES = (QUEUED, IN_PROGRESS, SUCCEEDED, REJECTED, TIMED_OUT, CANCELED)

# rollout states
RUNNING = "running"
WAITING_WINDOW = "waiting_window"
ROLLOUT_SUCCEEDED = "succeeded"  # every gateway SUCCEEDED
INCOMPLETE = "incomplete"  # every wave ran, the abort rule never fired, but not every gateway SUCCEEDED
ABORTED = "aborted"
ACTIVE = frozenset({RUNNING, WAITING_WINDOW})

DEFAULT_TZ = "Asia/Shanghai"


class PlanError(ValueError):
    """Bad rollout input: ``flag`` is the option, the message says where and what."""

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(f"{flag}: {message}")
        self.flag = flag


# ---------------------------------------------------------------- waves


@dataclass(frozen=True)
class WaveSpec:
    """One ``--waves`` entry: a cumulative share (percent) or count of the gateways after the canary."""

    value: float
    percent: bool

    def cumulative(self, remaining: int) -> int:
        if self.percent:
            return min(remaining, math.ceil(remaining * self.value / 100 - 1e-9))
        return min(remaining, int(self.value))

    def __str__(self) -> str:
        return f"{self.value:g}%" if self.percent else str(int(self.value))


_WAVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(%?)\s*$")


def parse_waves(text: str) -> tuple[WaveSpec, ...]:
    """``10%,50%,100%`` or ``5,20,100%``: cumulative, non-decreasing."""
    specs: list[WaveSpec] = []
    for index, part in enumerate(text.split(","), start=1):
        match = _WAVE.match(part)
        if match is None:
            raise PlanError(
                "--waves", f"entry {index} ({part.strip()!r}): expected a count such as 5 or a share such as 10%"
            )
        value, percent = float(match.group(1)), bool(match.group(2))
        if percent and not 0 < value <= 100:
            raise PlanError("--waves", f"entry {index} ({part.strip()}): a share must be in (0%, 100%]")
        if not percent and (value != int(value) or value < 1):
            raise PlanError("--waves", f"entry {index} ({part.strip()}): a count must be a whole number >= 1")
        spec = WaveSpec(value, percent)
        if specs and spec.percent == specs[-1].percent and spec.value < specs[-1].value:
            raise PlanError(
                "--waves", f"entry {index} ({spec}) is below entry {index - 1} ({specs[-1]}): shares are cumulative"
            )
        specs.append(spec)
    return tuple(specs)


def _order_key(gateway: str) -> tuple[str, str]:
    return hashlib.sha256(gateway.encode()).hexdigest(), gateway


def assign_waves(gateways: Sequence[str], canary: int, waves: Sequence[WaveSpec]) -> list[list[str]]:
    """The gateways of each wave; index 0 is the canary (maybe empty), then non-empty waves in order.

    Every gateway lands in exactly one wave; the last wave ends with every gateway.
    """
    ordered = sorted(set(gateways), key=_order_key)
    canary = min(canary, len(ordered))
    result: list[list[str]] = [ordered[:canary]]
    rest = ordered[canary:]
    done = 0
    cumulative = [spec.cumulative(len(rest)) for spec in waves] + [len(rest)]
    for upto in cumulative:
        upto = max(upto, done)  # a count followed by a smaller share stays put
        if upto > done:
            result.append(rest[done:upto])
            done = upto
    return result


# ---------------------------------------------------------------- abort rule

AbortState = Literal["rejected", "timed_out", "failed"]
_STATES: tuple[AbortState, ...] = ("rejected", "timed_out", "failed")
_TOKEN = re.compile(r"\s*(>=|>|\d+(?:\.\d+)?%?|[A-Za-z_]+|\S)")


@dataclass(frozen=True)
class Term:
    state: AbortState
    op: str
    value: float
    percent: bool
    after: int = 0

    def holds(self, counts: Mapping[str, int]) -> bool:
        finished = counts.get(SUCCEEDED, 0) + counts.get(REJECTED, 0) + counts.get(TIMED_OUT, 0)
        if finished < self.after or (self.percent and finished == 0):
            return False
        n = self.count(counts)
        seen = 100.0 * n / finished if self.percent else float(n)
        return seen > self.value if self.op == ">" else seen >= self.value

    def count(self, counts: Mapping[str, int]) -> int:
        if self.state == "rejected":
            return counts.get(REJECTED, 0)
        if self.state == "timed_out":
            return counts.get(TIMED_OUT, 0)
        return counts.get(REJECTED, 0) + counts.get(TIMED_OUT, 0)

    def __str__(self) -> str:
        value = f"{self.value:g}{'%' if self.percent else ''}"
        return f"{self.state} {self.op} {value}" + (f" after {self.after}" if self.after else "")


@dataclass(frozen=True)
class AbortRule:
    """Clauses joined by ``or``; each clause is terms joined by ``and``."""

    text: str
    clauses: tuple[tuple[Term, ...], ...] = field(default=())

    def fired(self, counts: Mapping[str, int]) -> str | None:
        """None, or why it fired: the clause and the counts (``rejected > 0: rejected=1 ...``)."""
        for clause in self.clauses:
            if all(term.holds(counts) for term in clause):
                finished = sum(counts.get(s, 0) for s in FINISHED)
                rule = " and ".join(str(t) for t in clause)
                return (
                    f"abort rule '{rule}' fired: rejected={counts.get(REJECTED, 0)} "
                    f"timed_out={counts.get(TIMED_OUT, 0)} succeeded={counts.get(SUCCEEDED, 0)} "
                    f"of {finished} finished"
                )
        return None


def parse_abort_rule(text: str) -> AbortRule:
    """The ``--abort-if`` rule; PlanError with the character position of the bad token."""
    tokens: list[tuple[int, str]] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:  # only trailing blanks are left
            break
        tokens.append((match.start(1), match.group(1)))
        pos = match.end()
    index = 0

    def fail(message: str) -> PlanError:
        where = tokens[index][0] if index < len(tokens) else len(text)
        return PlanError("--abort-if", f"at character {where + 1} of {text!r}: {message}")

    def take() -> str | None:
        nonlocal index
        if index >= len(tokens):
            return None
        index += 1
        return tokens[index - 1][1]

    def peek() -> str | None:
        return tokens[index][1].lower() if index < len(tokens) else None

    def term() -> Term:
        nonlocal index
        state = (peek() or "").lower()
        if state not in _STATES:
            raise fail(f"expected a state ({', '.join(_STATES)}), got {peek() or 'the end'!r}")
        take()
        op = peek()
        if op not in (">", ">="):
            raise fail(f"expected > or >= after {state!r}, got {op or 'the end'!r}")
        take()
        number = peek() or ""
        if not re.fullmatch(r"\d+(?:\.\d+)?%?", number):
            raise fail(f"expected a number such as 0 or 10%, got {number or 'the end'!r}")
        take()
        percent = number.endswith("%")
        value = float(number.rstrip("%"))
        if percent and value > 100:
            index -= 1
            raise fail("a share above 100% can never be exceeded")
        after = 0
        if peek() == "after":
            take()
            count = peek() or ""
            if not count.isdigit():
                raise fail(f"expected a whole number of finished gateways after 'after', got {count or 'the end'!r}")
            take()
            after = int(count)
        return Term(state, op, value, percent, after)

    clauses: list[tuple[Term, ...]] = []
    if not text.strip():
        return AbortRule(text, ())
    while True:
        terms = [term()]
        while peek() == "and":
            take()
            terms.append(term())
        clauses.append(tuple(terms))
        if peek() is None:
            break
        if peek() != "or":
            raise fail(f"expected 'and', 'or' or the end, got {tokens[index][1]!r}")
        take()
    return AbortRule(text, tuple(clauses))


# ---------------------------------------------------------------- window

_HHMM = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


@dataclass(frozen=True)
class Window:
    """Daily ``start``-``end`` minutes after local midnight; ``end < start`` crosses midnight."""

    start: int
    end: int
    tz: str

    def contains(self, ts: float) -> bool:
        local = dt.datetime.fromtimestamp(ts, ZoneInfo(self.tz))
        minute = local.hour * 60 + local.minute
        if self.start < self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end

    def __str__(self) -> str:
        return f"{self.start // 60:02d}:{self.start % 60:02d}-{self.end // 60:02d}:{self.end % 60:02d} {self.tz}"


def parse_window(text: str, tz: str = DEFAULT_TZ) -> Window:
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise PlanError("--tz", f"unknown time zone {tz!r} (an IANA name such as Asia/Shanghai)") from None
    parts = text.strip().split("-")
    if len(parts) != 2:
        raise PlanError("--window", f"{text!r}: expected HH:MM-HH:MM such as 22:00-05:00")
    minutes = []
    for which, part in zip(("start", "end"), parts, strict=True):
        match = _HHMM.match(part.strip())
        if match is None:
            raise PlanError("--window", f"{text!r}: the {which} {part.strip()!r} is not HH:MM (00:00 .. 23:59)")
        minutes.append(int(match.group(1)) * 60 + int(match.group(2)))
    if minutes[0] == minutes[1]:
        raise PlanError("--window", f"{text!r}: start and end are equal; leave --window out to run at any time")
    return Window(minutes[0], minutes[1], tz)


# ---------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Plan:
    canary: int
    waves: tuple[WaveSpec, ...]
    abort_if: AbortRule
    window: Window | None
    timeout: float  # seconds a gateway has to confirm, from its `started`

    def to_json(self) -> dict[str, Any]:
        return {
            "canary": self.canary,
            "waves": [str(w) for w in self.waves],
            "abort_if": self.abort_if.text,
            "window": None if self.window is None else str(self.window).split(" ")[0],
            "tz": DEFAULT_TZ if self.window is None else self.window.tz,
            "timeout": self.timeout,
        }


def make_plan(
    *,
    canary: int,
    waves: str,
    abort_if: str,
    window: str | None,
    timeout: str | float,
    tz: str = DEFAULT_TZ,
) -> Plan:
    """Every flag checked; PlanError naming the first bad one."""
    if canary < 0:
        raise PlanError("--canary", f"{canary}: must be 0 (no canary) or more")
    try:
        seconds = parse_duration(timeout)
    except ValueError as exc:
        raise PlanError("--timeout", str(exc)) from None
    if seconds <= 0:
        raise PlanError("--timeout", "must be more than 0")
    return Plan(
        canary=canary,
        waves=parse_waves(waves),
        abort_if=parse_abort_rule(abort_if),
        window=None if window is None else parse_window(window, tz),
        timeout=seconds,
    )


def plan_from_json(doc: Mapping[str, Any]) -> Plan:
    """The plan stored in ``rollouts.plan`` (made by ``Plan.to_json``)."""
    return make_plan(
        canary=int(doc["canary"]),
        waves=",".join(doc["waves"]) or "100%",
        abort_if=str(doc["abort_if"]),
        window=doc.get("window"),
        timeout=float(doc["timeout"]),
        tz=str(doc.get("tz") or DEFAULT_TZ),
    )
