"""The validation record ``twin validate`` writes: a policy file's hash bound to a scenario's KPIs
and gates (docs/POLICY_BUNDLE.md, "Validation record").

Owns: :class:`Gate`, :class:`ValidationRecord`, its canonical encoding and hash (what a bundle's
``validation_sha256`` holds) and :func:`check_validation_record`, the proof a policy passed.
Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import math
from typing import Annotated, Final, Literal

import msgspec

from edge_agent.errors import PolicyError
from edge_agent.policy.bundle import Reason
from edge_agent.policy.shadow_report import ShadowReport

__all__ = [
    "Gate",
    "ValidationRecord",
    "check_validation_record",
    "decode_validation_record",
    "encode_validation_record",
    "record_sha256",
]

_Sha256Hex = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]


class Gate(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One scenario gate: ``value op limit`` (e.g. ``sos_p90_s <= 600``) and its verdict."""

    name: str
    kpi: str
    op: Literal["<=", ">="]
    limit: float
    value: float
    passed: bool

    def holds(self) -> bool:
        """Recompute the verdict from ``value``, ``op`` and ``limit`` (never trust ``passed``)."""
        if not (math.isfinite(self.value) and math.isfinite(self.limit)):
            return False
        return self.value <= self.limit if self.op == "<=" else self.value >= self.limit


class ValidationRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """What ``twin validate`` writes: the policy's hash bound to a scenario's KPIs and gates.

    Unknown fields are refused so that :func:`record_sha256` covers everything a record says.
    """

    policy_sha256: _Sha256Hex
    scenario: str
    scenario_sha256: _Sha256Hex
    kpis: dict[str, float]
    gates: tuple[Gate, ...]
    passed: bool
    created_at: str | int  # ISO 8601 text or epoch seconds
    tool_version: str
    shadow: ShadowReport | None = None  # field evidence: the candidate's shadow run on a gateway


_RECORD_DECODER: Final = msgspec.json.Decoder(ValidationRecord)


def encode_validation_record(record: ValidationRecord) -> bytes:
    """The record's canonical JSON: keys sorted at every level, compact, UTF-8."""
    return msgspec.json.encode(record, order="sorted")


def record_sha256(record: ValidationRecord) -> str:
    """Hex SHA-256 of :func:`encode_validation_record` (what a bundle's validation_sha256 holds)."""
    return hashlib.sha256(encode_validation_record(record)).hexdigest()


def decode_validation_record(data: bytes, *, source: str = "validation record") -> ValidationRecord:
    """Parse a validation record (any JSON layout); raise ``bad_validation_record`` naming where."""
    try:
        record = _RECORD_DECODER.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise PolicyError(
            Reason.BAD_VALIDATION_RECORD,
            f"{source}: {exc}; expected the JSON written by `twin validate`",
        ) from None
    numbers = [*record.kpis.values()]
    for gate in record.gates:
        numbers += [gate.limit, gate.value]
    if not all(math.isfinite(n) for n in numbers):
        raise PolicyError(Reason.BAD_VALIDATION_RECORD, f"{source}: a KPI or gate holds NaN or infinity")
    return record


def check_validation_record(record: ValidationRecord, payload: bytes) -> None:
    """Refuse a record that does not prove ``payload`` passed its scenario.

    Checks, in order: the record is for these exact bytes (``validation_mismatch``); it has gates,
    each gate's verdict and value agree with its KPI and limit, and the overall verdict is the
    conjunction of the gates (``validation_inconsistent``); it passed (``validation_failed``).
    """
    actual = hashlib.sha256(payload).hexdigest()
    if record.policy_sha256 != actual:
        raise PolicyError(
            Reason.VALIDATION_MISMATCH,
            f"the record is for policy sha256 {record.policy_sha256[:16]}..., the file is "
            f"{actual[:16]}...; run `twin validate` on this exact file",
        )
    if not record.gates:
        raise PolicyError(Reason.VALIDATION_INCONSISTENT, "the record has no gates")
    if record.shadow is not None and record.shadow.candidate_sha256 != actual:  # field evidence of another file
        raise PolicyError(Reason.VALIDATION_INCONSISTENT, "the record's shadow report is for another policy file")
    for gate in record.gates:
        if gate.kpi not in record.kpis or record.kpis[gate.kpi] != gate.value:
            raise PolicyError(
                Reason.VALIDATION_INCONSISTENT,
                f"gate {gate.name!r}: value {gate.value} is not the record's KPI {gate.kpi!r}",
            )
        if gate.holds() != gate.passed:
            raise PolicyError(
                Reason.VALIDATION_INCONSISTENT,
                f"gate {gate.name!r}: {gate.value} {gate.op} {gate.limit} is {gate.holds()}, "
                f"the record says passed={gate.passed}",
            )
    if record.passed != all(g.passed for g in record.gates):
        raise PolicyError(Reason.VALIDATION_INCONSISTENT, "the overall verdict disagrees with the gates")
    if not record.passed:
        failed = ", ".join(g.name for g in record.gates if not g.passed)
        raise PolicyError(
            Reason.VALIDATION_FAILED,
            f"scenario {record.scenario!r} failed gates: {failed}; fix the policy or sign with "
            "--force (the bundle will say it is forced)",
        )
