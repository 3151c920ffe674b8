"""Field evidence for ``twin validate --shadow``: a gateway's shadow report of the candidate.

Owns: reading the report (``edge-agent shadow report --json``), refusing one made for another
policy file (its ``candidate_sha256`` must be the validated file's SHA-256) or one with no day
in it, and the lines ``twin validate`` prints about it. The record then carries the report, so
a signed bundle rests on twin evidence and field evidence together.
Must not import: edge_agent.agent/engine/transports.
"""

from __future__ import annotations

from pathlib import Path

from edge_agent.policy.shadow_report import ShadowReport, decode_report, totals


class ShadowEvidenceError(ValueError):
    """The report cannot be bound to this policy."""


def load_shadow_evidence(path: Path, policy_sha256: str) -> ShadowReport:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ShadowEvidenceError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        report = decode_report(data, source=str(path))
    except ValueError as exc:
        raise ShadowEvidenceError(str(exc)) from None
    if report.candidate_sha256 != policy_sha256:
        raise ShadowEvidenceError(
            f"{path}: the shadow report is for policy sha256 {report.candidate_sha256[:16]}..., "
            f"the validated file is {policy_sha256[:16]}...; shadow this exact file"
        )
    if not report.days:
        raise ShadowEvidenceError(f"{path}: the shadow report has no day in it yet")
    return report


def summary_lines(report: ShadowReport) -> list[str]:
    total = totals(report)
    return [
        f"shadow evidence: gateway {report.gateway}, {total['days']:g} day(s) "
        f"({total['complete_days']:g} complete) of {report.days_planned} planned, from {report.started}",
        f"  lamps: {total['lamp_minutes']:g} lamp-minutes at another level, {total['level_minutes']:g} level-minutes",
        f"  alerts: {total['alerts_both']:g} raised by both, {total['alerts_only_active']:g} only by the active, "
        f"{total['alerts_only_candidate']:g} only by the candidate; "
        f"{total['responder_differences']:g} responder choice(s) differ",
        f"  publishes only active / candidate: {total['published_only_active']:g} / "
        f"{total['published_only_candidate']:g}; candidate errors {total['candidate_errors']:g}",
    ]
