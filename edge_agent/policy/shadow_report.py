"""The shadow report: how a candidate policy, run beside the active one, would have differed.

Owns: the report's schema, one schema for its three readers: the gateway (which fills it day by
day, edge_agent/agent/shadow.py), the centre (``shadow/report`` messages, ``edge-agent shadow
report --json``) and ``twin validate --shadow`` (which binds it into a validation record).
Must not import: asyncio, sqlite3, edge_agent.engine, edge_agent.agent, edge_agent.store.
"""

from __future__ import annotations

import math
from typing import Annotated, Final

import msgspec

_Sha256Hex = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]

MAX_RESPONDER_DIFFS = 50  # kept per day (all are counted in ``responder_differences``)


class LampDiff(msgspec.Struct, forbid_unknown_fields=True):
    """Lighting minutes where the two policies decided different levels for some lamps."""

    lamp_minutes: float = 0.0  # lamp x minutes at a different level
    level_minutes: float = 0.0  # sum of |active level - candidate level| (percent) x minutes


class ResponderDiff(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One escalation step of one alert for which the two chose different responders."""

    ts: float
    rule: str
    device: str
    step: int
    active: str
    candidate: str


class ShadowDay(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One local day of the gateway, active vs candidate, for the same inputs."""

    day: str  # the gateway's local date, YYYY-MM-DD
    complete: bool = False  # False while the day is still being counted
    active_sha256: str = ""  # the active policy's file hash (the last one of the day)
    inputs: int = 0  # events, acknowledgements and timer wake-ups fed to the candidate
    minutes: int = 0  # lighting minutes compared
    lamps: LampDiff = msgspec.field(default_factory=LampDiff)  # all lamps
    groups: dict[str, LampDiff] = msgspec.field(default_factory=dict)  # by lamp group
    alerts_both: int = 0  # alerts both raised for the same input
    alerts_only_active: dict[str, int] = msgspec.field(default_factory=dict)  # by rule
    alerts_only_candidate: dict[str, int] = msgspec.field(default_factory=dict)  # by rule
    responder_differences: int = 0
    responders: list[ResponderDiff] = msgspec.field(default_factory=list)  # the first MAX_RESPONDER_DIFFS
    published_active: dict[str, int] = msgspec.field(default_factory=dict)  # rule publishes, by event topic
    published_candidate: dict[str, int] = msgspec.field(default_factory=dict)
    published_only_active: dict[str, int] = msgspec.field(default_factory=dict)  # by event topic
    published_only_candidate: dict[str, int] = msgspec.field(default_factory=dict)
    candidate_errors: int = 0  # inputs on which the candidate raised (caught; the active never saw it)
    dropped: int = 0  # inputs not fed because the candidate fell behind
    candidate_ms: float = 0.0  # time the candidate took, in total
    candidate_max_ms: float = 0.0  # and on its slowest input

    @property
    def differences(self) -> int:
        """How many things differed (minutes with any lamp apart count once each)."""
        return (
            round(self.lamps.lamp_minutes)
            + sum(self.alerts_only_active.values())
            + sum(self.alerts_only_candidate.values())
            + self.responder_differences
            + sum(self.published_only_active.values())
            + sum(self.published_only_candidate.values())
        )


class ShadowReport(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A candidate's shadow run on one gateway: the days so far (or a single day, north)."""

    v: int = 1
    gateway: str
    candidate: str  # the candidate policy's name
    candidate_sha256: _Sha256Hex  # of the candidate file's bytes: what a validation binds
    days_planned: int
    started: str  # local date of the first day
    days: list[ShadowDay] = msgspec.field(default_factory=list)


_DECODER: Final = msgspec.json.Decoder(ShadowReport)


def encode_report(report: ShadowReport) -> bytes:
    return msgspec.json.encode(report, order="sorted")


def decode_report(data: bytes, *, source: str = "shadow report") -> ShadowReport:
    """Parse a report; ValueError naming ``source`` when it is not one, or holds NaN/infinity."""
    try:
        report = _DECODER.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{source}: {exc}; expected the JSON of `edge-agent shadow report --json`") from None
    for day in report.days:
        numbers = [day.lamps.lamp_minutes, day.lamps.level_minutes, day.candidate_ms, day.candidate_max_ms]
        numbers += [n for g in day.groups.values() for n in (g.lamp_minutes, g.level_minutes)]
        if not all(math.isfinite(n) for n in numbers):
            raise ValueError(f"{source}: day {day.day} holds NaN or infinity")
    return report


def totals(report: ShadowReport) -> dict[str, float]:
    """The report summed over its days (what a validation record's reader looks at first)."""
    days = report.days
    return {
        "days": float(len(days)),
        "complete_days": float(sum(d.complete for d in days)),
        "lamp_minutes": sum(d.lamps.lamp_minutes for d in days),
        "level_minutes": sum(d.lamps.level_minutes for d in days),
        "alerts_both": float(sum(d.alerts_both for d in days)),
        "alerts_only_active": float(sum(sum(d.alerts_only_active.values()) for d in days)),
        "alerts_only_candidate": float(sum(sum(d.alerts_only_candidate.values()) for d in days)),
        "responder_differences": float(sum(d.responder_differences for d in days)),
        "published_only_active": float(sum(sum(d.published_only_active.values()) for d in days)),
        "published_only_candidate": float(sum(sum(d.published_only_candidate.values()) for d in days)),
        "candidate_errors": float(sum(d.candidate_errors for d in days)),
        "dropped": float(sum(d.dropped for d in days)),
    }
