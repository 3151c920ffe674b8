"""The signed policy bundle: format, round trip, validation records, keys, CLI, and parser fuzzing.

The attack suite (rollback, expiry, clock set back, kill -9 ...) is in
test_policy_bundle_attacks.py.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from edge_agent.agent.policy_keys import load_private_key, load_trusted_keys, write_keypair
from edge_agent.cli.policy import policy_app
from edge_agent.errors import PolicyError
from edge_agent.policy.bundle import (
    DOMAIN_PREFIX,
    Bundle,
    SignatureEntry,
    Target,
    bundle_bytes,
    encode_envelope,
    parse_envelope,
)
from edge_agent.policy.bundle_sign import build_bundle, sign_bundle
from edge_agent.policy.bundle_verify import check_signatures, verify_envelope
from edge_agent.policy.keys import key_id, load_public_key_pem, public_key_to_pem, trusted_key_set
from edge_agent.policy.validation_record import (
    Gate,
    ValidationRecord,
    decode_validation_record,
    encode_validation_record,
    record_sha256,
)
from edge_agent.store.policy_store import AcceptResult, PolicyStore

T0 = 1_750_000_000
POLICY = b"# lighting policy\n[programs.night]\nlevels = [[0, 100], [1380, 50]]\n"
FIXED_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


def make_bundle(
    key: Ed25519PrivateKey = FIXED_KEY, *, version: int = 1, payload: bytes = POLICY, **kw: object
) -> Bundle:
    args: dict[str, object] = {
        "kind": "policy",
        "district": "old-town",
        "gateways": ["*"],
        "version": version,
        "issued_at": T0,
        "not_before": T0,
        "expires": T0 + 30 * 86400,
        "key_id": key_id(key.public_key()),
        "force": True,
    }
    args.update(kw)
    return build_bundle(payload, **args)  # type: ignore[arg-type]


def make_record(payload: bytes = POLICY, *, value: float = 420.0) -> ValidationRecord:
    gate = Gate(name="sos p90", kpi="sos_p90_s", op="<=", limit=600.0, value=value, passed=value <= 600.0)
    return ValidationRecord(
        policy_sha256=hashlib.sha256(payload).hexdigest(),
        scenario="old-town-winter",
        scenario_sha256="ab" * 32,
        kpis={"sos_p90_s": value, "dark_lit_pct": 99.9},
        gates=(gate,),
        passed=gate.passed,
        created_at="2025-06-15T12:00:00+00:00",
        tool_version="twin 0.1.0",
    )


TRUSTED = trusted_key_set([FIXED_KEY.public_key()])


# --------------------------------------------------------------------------- round trip, format


def test_round_trip_keeps_every_field_and_the_payload_bytes() -> None:
    bundle = make_bundle(version=7, gateways=["gw-2", "gw-1"], district="north")
    envelope = sign_bundle(bundle, FIXED_KEY)
    verified = verify_envelope(envelope, TRUSTED, "gw-1", "north", T0 + 10)
    assert verified == bundle
    assert verified.payload == POLICY
    assert verified.target.gateways == ("gw-1", "gw-2")  # sorted: one bundle, one byte string
    parsed, signatures = parse_envelope(envelope)
    assert parsed == bundle
    assert [s.key_id for s in signatures] == [bundle.key_id]


def test_canonical_bytes_are_deterministic_and_golden() -> None:
    payload = b"x = 1\n"
    bundle = make_bundle(payload=payload)
    assert bundle_bytes(bundle) == bundle_bytes(make_bundle(payload=payload))
    kid = key_id(FIXED_KEY.public_key())
    payload_sha = hashlib.sha256(payload).hexdigest()
    expected = (
        '{"kind":"policy","target":{"district":"old-town","gateways":["*"]},"version":1,'
        f'"issued_at":{T0},"not_before":{T0},"expires":{T0 + 30 * 86400},'
        '"payload":"eCA9IDEK",'
        f'"payload_sha256":"{payload_sha}",'
        f'"validation_sha256":null,"forced":true,"key_id":"{kid}"}}'
    )
    assert bundle_bytes(bundle).decode() == expected
    # Ed25519 signatures are deterministic: the whole envelope is reproducible.
    assert sign_bundle(bundle, FIXED_KEY) == sign_bundle(bundle, FIXED_KEY)


def test_signature_covers_the_domain_prefix() -> None:
    bundle = make_bundle()
    bare = FIXED_KEY.sign(bundle_bytes(bundle))  # no prefix: must not verify
    envelope = encode_envelope(bundle, [SignatureEntry(key_id=bundle.key_id, sig=bare)])
    with pytest.raises(PolicyError) as err:
        verify_envelope(envelope, TRUSTED, "gw", "old-town", T0)
    assert err.value.reason == "bad_signature"
    good = FIXED_KEY.sign(DOMAIN_PREFIX + bundle_bytes(bundle))
    envelope = encode_envelope(bundle, [SignatureEntry(key_id=bundle.key_id, sig=good)])
    assert verify_envelope(envelope, TRUSTED, "gw", "old-town", T0) == bundle


def test_non_canonical_bundle_bytes_are_refused_even_when_signed() -> None:
    raw = bundle_bytes(make_bundle()).replace(b'"version":1', b'"version": 1')
    sig = FIXED_KEY.sign(DOMAIN_PREFIX + raw)
    entry = {"key_id": key_id(FIXED_KEY.public_key()), "sig": base64.b64encode(sig).decode()}
    envelope = json.dumps({"bundle": base64.b64encode(raw).decode(), "signatures": [entry]})
    with pytest.raises(PolicyError) as err:
        parse_envelope(envelope.encode())
    assert err.value.reason == "non_canonical"
    # the same bytes written canonically pass the parser
    canonical = bundle_bytes(make_bundle())
    entry["sig"] = base64.b64encode(FIXED_KEY.sign(DOMAIN_PREFIX + canonical)).decode()
    envelope = json.dumps({"bundle": base64.b64encode(canonical).decode(), "signatures": [entry]})
    assert parse_envelope(envelope.encode())[0] == make_bundle()


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"gateways": ["*", "gw-1"]}, "'*'"),
        ({"gateways": ["bad id"]}, "gateways"),
        ({"district": ""}, "district"),
        ({"expires": T0}, "expires"),
        ({"issued_at": T0 + 31 * 86400}, "issued_at"),
        ({"version": 0}, "version"),
    ],
)
def test_build_refuses_invalid_fields_with_the_field_named(overrides: dict[str, object], fragment: str) -> None:
    with pytest.raises(PolicyError) as err:
        make_bundle(**overrides)  # type: ignore[arg-type]
    assert err.value.reason == "invalid_bundle"
    assert fragment in err.value.detail


def test_cosigners_and_threshold() -> None:
    second = Ed25519PrivateKey.generate()
    trusted = trusted_key_set([FIXED_KEY.public_key(), second.public_key()])
    bundle = make_bundle()
    both = sign_bundle(bundle, FIXED_KEY, second)
    assert verify_envelope(both, trusted, "gw", "old-town", T0, threshold=2) == bundle
    one = sign_bundle(bundle, FIXED_KEY)
    with pytest.raises(PolicyError) as err:
        verify_envelope(one, trusted, "gw", "old-town", T0, threshold=2)
    assert err.value.reason == "signature_threshold"
    # the same key listed twice does not count twice (TUF: distinct keys toward a threshold)
    parsed, sigs = parse_envelope(one)
    doubled = encode_envelope(parsed, [*sigs, *sigs])
    with pytest.raises(PolicyError) as err:
        parse_envelope(doubled)
    assert err.value.reason == "malformed"
    assert check_signatures(parsed, sigs, trusted) == frozenset({bundle.key_id})


def test_sign_refuses_a_key_other_than_the_named_signer() -> None:
    with pytest.raises(PolicyError) as err:
        sign_bundle(make_bundle(), Ed25519PrivateKey.generate())
    assert err.value.reason == "bad_key"


# --------------------------------------------------------------------------- validation record


def test_passing_record_binds_its_hash_and_is_not_forced() -> None:
    record = make_record()
    bundle = make_bundle(validation=record, force=False)
    assert bundle.forced is False
    assert bundle.validation_sha256 == record_sha256(record)


def test_record_hash_is_independent_of_json_layout() -> None:
    record = make_record()
    canonical = encode_validation_record(record)
    shuffled = json.dumps(dict(reversed(list(json.loads(canonical).items()))), indent=2).encode()
    assert decode_validation_record(shuffled) == record
    assert record_sha256(decode_validation_record(shuffled)) == record_sha256(record)


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (make_record(b"another file"), "validation_mismatch"),
        (make_record(value=900.0), "validation_failed"),
        (msgspec.structs.replace(make_record(value=900.0), passed=True), "validation_inconsistent"),
        (
            msgspec.structs.replace(
                make_record(),
                gates=(Gate("sos p90", "sos_p90_s", "<=", 600.0, 420.0, passed=False),),
            ),
            "validation_inconsistent",
        ),
        (msgspec.structs.replace(make_record(), gates=()), "validation_inconsistent"),
        (
            msgspec.structs.replace(make_record(), kpis={"sos_p90_s": 1.0, "dark_lit_pct": 9.0}),
            "validation_inconsistent",
        ),
    ],
    ids=["other-file", "failed", "verdict-lies", "gate-lies", "no-gates", "kpi-differs"],
)
def test_signing_refuses_without_a_passing_matching_record(record: ValidationRecord, reason: str) -> None:
    with pytest.raises(PolicyError) as err:
        make_bundle(validation=record, force=False)
    assert err.value.reason == reason
    forced = make_bundle(validation=record, force=True)
    assert forced.forced is True
    if reason == "validation_mismatch":
        assert forced.validation_sha256 is None  # a record for another file proves nothing
    else:
        assert forced.validation_sha256 == record_sha256(record)


def test_signing_without_a_record_needs_force() -> None:
    with pytest.raises(PolicyError) as err:
        make_bundle(force=False)
    assert err.value.reason == "validation_required"
    assert make_bundle(force=True).forced is True


def test_record_decoding_names_the_problem() -> None:
    with pytest.raises(PolicyError) as err:
        decode_validation_record(b'{"policy_sha256": 3}', source="rec.json")
    assert err.value.reason == "bad_validation_record"
    assert "rec.json" in err.value.detail
    assert "policy_sha256" in err.value.detail


# --------------------------------------------------------------------------- keys


def test_keygen_files_key_id_and_pinned_set(tmp_path: Path) -> None:
    private_path, public_path, kid = write_keypair(tmp_path / "keys", "centre")
    assert (private_path.stat().st_mode & 0o777) == 0o600
    key = load_private_key(private_path)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert kid == hashlib.sha256(raw).hexdigest()[:16] == key_id(key.public_key())
    pinned = load_trusted_keys(tmp_path / "keys")  # a directory: *.pub, private keys ignored
    assert list(pinned) == [kid]
    assert list(load_trusted_keys([public_path])) == [kid]
    assert load_public_key_pem(public_key_to_pem(key.public_key())) == key.public_key()
    with pytest.raises(PolicyError) as err:
        write_keypair(tmp_path / "keys", "centre")
    assert err.value.reason == "key_exists"


def test_key_loading_fails_closed(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(PolicyError) as err:
        load_trusted_keys(tmp_path / "empty")
    assert err.value.reason == "no_trusted_keys"
    (tmp_path / "junk.pub").write_bytes(b"-----BEGIN PUBLIC KEY-----\nAAAA\n")
    with pytest.raises(PolicyError) as err:
        load_trusted_keys(tmp_path / "junk.pub")
    assert err.value.reason == "bad_key"
    private_path, _, _ = write_keypair(tmp_path / "k", "c")
    os.chmod(private_path, 0o644)
    with pytest.raises(PolicyError) as err:
        load_private_key(private_path)
    assert err.value.reason == "bad_key"
    assert "chmod 600" in err.value.detail


# --------------------------------------------------------------------------- CLI


def test_cli_keygen_sign_verify(tmp_path: Path) -> None:
    runner = CliRunner()
    keys = tmp_path / "keys"
    res = runner.invoke(policy_app, ["keygen", "--out", str(keys), "--name", "centre"])
    assert res.exit_code == 0, res.output
    policy = tmp_path / "policy.toml"
    policy.write_bytes(POLICY)
    out = tmp_path / "bundle.json"
    base = [
        "sign",
        str(policy),
        "--key",
        str(keys / "centre.key"),
        "--district",
        "old-town",
        "--gateways",
        "gw-1,gw-2",
        "--version",
        "4",
        "--out",
        str(out),
    ]

    res = runner.invoke(policy_app, base)
    assert res.exit_code == 1
    assert "validation_required" in res.output
    assert not out.exists()

    failing = tmp_path / "failing.json"
    failing.write_bytes(encode_validation_record(make_record(value=900.0)))
    res = runner.invoke(policy_app, [*base, "--validation", str(failing)])
    assert res.exit_code == 1
    assert "validation_failed" in res.output

    res = runner.invoke(policy_app, [*base, "--force"])
    assert res.exit_code == 0, res.output
    assert "FORCED" in res.output
    forced, _ = parse_envelope(out.read_bytes())
    assert forced.forced is True
    assert forced.payload == POLICY

    passing = tmp_path / "passing.json"
    passing.write_bytes(encode_validation_record(make_record()))
    res = runner.invoke(policy_app, [*base, "--validation", str(passing), "--valid-days", "2"])
    assert res.exit_code == 0, res.output
    assert "FORCED" not in res.output
    bundle, _ = parse_envelope(out.read_bytes())
    assert bundle.forced is False
    assert bundle.expires - bundle.not_before == 2 * 86400

    res = runner.invoke(
        policy_app,
        ["verify", str(out), "--pubkey", str(keys), "--gateway", "gw-1", "--district", "old-town"],
    )
    assert res.exit_code == 0, res.output
    assert "OK" in res.output

    for extra, reason in [
        (["--gateway", "gw-9", "--district", "old-town"], "wrong_target"),
        (["--district", "new-town"], "wrong_target"),
        (["--now", str(bundle.expires)], "expired"),
        (["--now", "2001-01-01T00:00:00"], "not_yet_valid"),
    ]:
        res = runner.invoke(policy_app, ["verify", str(out), "--pubkey", str(keys), *extra])
        assert res.exit_code == 1, (extra, res.output)
        assert reason in res.output

    other = tmp_path / "other"
    write_keypair(other, "intruder")
    res = runner.invoke(policy_app, ["verify", str(out), "--pubkey", str(other)])
    assert res.exit_code == 1
    assert "unknown_key" in res.output


def test_cli_help_is_complete() -> None:
    runner = CliRunner()
    for command in ["keygen", "sign", "verify"]:
        res = runner.invoke(policy_app, [command, "--help"])
        assert res.exit_code == 0
        assert "Usage" in res.output


# --------------------------------------------------------------------------- fuzzing


def _timed_ms(fn: Callable[[], object]) -> float:
    """Fastest of up to three runs: a slow input is slow every time, a scheduler hiccup is not."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        with contextlib.suppress(PolicyError):
            fn()
        best = min(best, (time.perf_counter() - start) * 1000)
        if best < 10:
            break
    return best


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_fuzz_random_bytes_only_policy_errors(data: bytes) -> None:
    with pytest.raises(PolicyError) as err:
        verify_envelope(data, TRUSTED, "gw-1", "old-town", T0)
    assert err.value.reason
    assert _timed_ms(lambda: verify_envelope(data, TRUSTED, "gw-1", "old-town", T0)) < 10


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["bundle", "signatures", "x"]), _json_values, max_size=3))
def test_fuzz_structured_json_only_policy_errors(obj: dict[str, object]) -> None:
    data = json.dumps(obj).encode()
    with pytest.raises(PolicyError):
        verify_envelope(data, TRUSTED, "gw-1", "old-town", T0)
    assert _timed_ms(lambda: verify_envelope(data, TRUSTED, "gw-1", "old-town", T0)) < 10


_mutation = st.tuples(
    st.sampled_from(["flip", "insert", "delete", "truncate", "replace", "dup"]),
    st.floats(min_value=0, max_value=1, exclude_max=True),
    st.integers(min_value=0, max_value=255),
    st.integers(min_value=1, max_value=64),
)


def _mutate(data: bytes, op: str, where: float, byte: int, span: int) -> bytes:
    i = int(where * len(data))
    if op == "flip":
        return data[:i] + bytes([data[i] ^ (byte or 1)]) + data[i + 1 :]
    if op == "insert":
        return data[:i] + bytes([byte]) * span + data[i:]
    if op == "delete":
        return data[:i] + data[i + span :]
    if op == "truncate":
        return data[:i]
    if op == "replace":
        return data[:i] + bytes([byte]) * span + data[i + span :]
    return data[:i] + data[i : i + span] + data[i:]  # duplicate a span


def test_fuzz_mutated_envelopes_into_the_store(tmp_path: Path) -> None:
    """Mutated valid envelopes: only PolicyError, fast, and the next valid bundle still goes in.

    A mutation may be harmless (e.g. whitespace in the envelope JSON): it is then accepted, but
    only ever as the exact bundle that was signed.
    """
    store = PolicyStore(tmp_path / "gw.sqlite")
    state = {"version": 0}

    @settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(_mutation, min_size=1, max_size=3))
    def run(mutations: list[tuple[str, float, int, int]]) -> None:
        candidate = make_bundle(version=state["version"] + 1)
        envelope = sign_bundle(candidate, FIXED_KEY)
        mutated = envelope
        for op, where, byte, span in mutations:
            if mutated:
                mutated = _mutate(mutated, op, where, byte, span)

        def attempt() -> AcceptResult:
            return store.accept(
                mutated,
                trusted_keys=TRUSTED,
                gateway_id="gw-1",
                district="old-town",
                wall_clock_now=T0 + 1,
            )

        start = time.perf_counter()
        try:
            result = attempt()
        except PolicyError:
            elapsed = (time.perf_counter() - start) * 1000
            if elapsed >= 10:
                assert _timed_ms(attempt) < 10
        else:
            active = store.active()
            assert active is not None
            assert active.bundle == bundle_bytes(candidate)
            assert result.bundle == candidate
            state["version"] = candidate.version
        following = make_bundle(version=state["version"] + 1)
        result = store.accept(
            sign_bundle(following, FIXED_KEY),
            trusted_keys=TRUSTED,
            gateway_id="gw-1",
            district="old-town",
            wall_clock_now=T0 + 1,
        )
        assert result.changed
        state["version"] = following.version

    try:
        run()
    finally:
        store.close()
    assert state["version"] >= 250


def test_target_struct_is_frozen() -> None:
    target = Target(district="d", gateways=("*",))
    with pytest.raises(AttributeError):
        target.district = "e"  # type: ignore[misc]
