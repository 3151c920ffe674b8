"""`twin validate --shadow`: the field evidence of a gateway's shadow run, bound into the record.

A report for the validated file's exact bytes is carried (and shown); one for another file is
refused; `edge-agent policy sign` signs records with and without it; a record without it is
encoded exactly as before the field existed (its hash, in signed bundles, does not move).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import msgspec
from typer.testing import CliRunner

from edge_agent.cli.main import app as agent_cli
from edge_agent.policy.shadow_report import LampDiff, ResponderDiff, ShadowDay, ShadowReport, encode_report
from edge_agent.policy.validation_record import (
    ValidationRecord,
    check_validation_record,
    decode_validation_record,
    encode_validation_record,
)
from twin.cli import app

runner = CliRunner()


def _report(policy: Path, sha256: str | None = None) -> bytes:
    day = ShadowDay(
        day="2026-11-26",
        complete=True,
        minutes=1440,
        lamps=LampDiff(lamp_minutes=240.0, level_minutes=4800.0),
        groups={"village": LampDiff(lamp_minutes=240.0, level_minutes=4800.0)},
        alerts_both=1,
        responder_differences=1,
        responders=[ResponderDiff(1.0, "sos", "wear-001", 0, "dr-wang", "dr-li")],
    )
    report = ShadowReport(
        gateway="naxi-v01",
        candidate="naxi-eco",
        candidate_sha256=sha256 or hashlib.sha256(policy.read_bytes()).hexdigest(),
        days_planned=7,
        started="2026-11-26",
        days=[day],
    )
    return encode_report(report)


def _validate(policy: Path, scenario: Path, out: Path, *extra: str) -> object:
    args = ["validate", str(policy), "--scenario", str(scenario), "--out", str(out), "--workers", "1", *extra]
    return runner.invoke(app, args)


def test_validate_carries_the_shadow_report_of_this_file_and_sign_accepts_it(
    tiny_scenario: Path, tmp_path: Path
) -> None:
    policy = tiny_scenario.parent / "policies" / "naxi-standard.toml"
    (tmp_path / "shadow.json").write_bytes(_report(policy))
    result = _validate(policy, tiny_scenario, tmp_path / "val", "--shadow", str(tmp_path / "shadow.json"))
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert "shadow evidence: gateway naxi-v01, 1 day(s)" in result.output  # type: ignore[attr-defined]
    assert "1 responder choice(s) differ" in result.output  # type: ignore[attr-defined]
    record_path = tmp_path / "val" / "validation.json"
    record = decode_validation_record(record_path.read_bytes())
    assert record.shadow is not None and record.shadow.days[0].lamps.level_minutes == 4800.0
    check_validation_record(record, policy.read_bytes())
    keys = tmp_path / "keys"
    assert runner.invoke(agent_cli, ["policy", "keygen", "--out", str(keys)]).exit_code == 0
    for name, validation in (("with", record_path), ("without", None)):
        args = ["policy", "sign", str(policy), "--key", str(keys / "centre.key"), "--district", "naxi"]
        args += ["--gateways", "*", "--version", "1", "--out", str(tmp_path / f"{name}.bundle")]
        if validation is not None:
            args += ["--validation", str(validation)]
        else:  # a record of the same run, without the field evidence
            plain = msgspec.structs.replace(record, shadow=None)
            (tmp_path / "plain.json").write_bytes(encode_validation_record(plain))
            args += ["--validation", str(tmp_path / "plain.json")]
        signed = runner.invoke(agent_cli, args)
        assert signed.exit_code == 0, signed.output


def test_a_shadow_report_of_another_file_is_refused(tiny_scenario: Path, tmp_path: Path) -> None:
    policy = tiny_scenario.parent / "policies" / "naxi-standard.toml"
    (tmp_path / "shadow.json").write_bytes(_report(policy, sha256="ab" * 32))
    result = _validate(policy, tiny_scenario, tmp_path / "val", "--shadow", str(tmp_path / "shadow.json"))
    assert result.exit_code == 2  # type: ignore[attr-defined]
    assert "shadow this exact file" in result.output  # type: ignore[attr-defined]
    assert not (tmp_path / "val" / "validation.json").exists()


def test_a_record_without_shadow_evidence_encodes_as_before(tmp_path: Path) -> None:
    record = ValidationRecord(
        policy_sha256="a" * 64,
        scenario="s",
        scenario_sha256="b" * 64,
        kpis={"k": 1.0},
        gates=(),
        passed=True,
        created_at=0,
        tool_version="t",
    )
    assert b"shadow" not in encode_validation_record(record)
    assert decode_validation_record(encode_validation_record(record)) == record


def test_sign_refuses_a_record_whose_shadow_report_is_of_another_file(tmp_path: Path) -> None:
    import pytest

    from edge_agent.errors import PolicyError
    from edge_agent.policy.shadow_report import decode_report
    from edge_agent.policy.validation_record import Gate

    payload = b"[policy]\nname = 'x'\n"
    gate = Gate(name="g", kpi="k", op="<=", limit=2.0, value=1.0, passed=True)
    record = ValidationRecord(
        policy_sha256=hashlib.sha256(payload).hexdigest(),
        scenario="s",
        scenario_sha256="b" * 64,
        kpis={"k": 1.0},
        gates=(gate,),
        passed=True,
        created_at=0,
        tool_version="t",
        shadow=decode_report(_report(tmp_path, sha256="cd" * 32)),
    )
    with pytest.raises(PolicyError, match="another policy file"):
        check_validation_record(record, payload)
    check_validation_record(msgspec.structs.replace(record, shadow=None), payload)
