"""The signed policy bundle: format, canonical bytes, Ed25519 signing and verification.

Owns: the validation record written by ``twin validate`` (:class:`ValidationRecord`), the bundle
(:class:`Bundle`) and its canonical encoding, the on-wire envelope, the pure checks a gateway runs
on a bundle (size, structure, signature, payload hash, target, validity window) and the in-memory
key helpers (generate, PEM in and out, key ids).

Must not import: asyncio, sqlite3, edge_agent.engine, edge_agent.transports, edge_agent.store,
edge_agent.agent, or anything that does I/O. Only the standard library, msgspec, cryptography and
edge_agent.errors. Reading key files, persisting the accepted version and the last known time live
in ``edge_agent.agent.policy_keys`` and ``edge_agent.store.policy_store``.

Wire format (also in docs/POLICY_BUNDLE.md)
-------------------------------------------
*Canonical bundle bytes* are the compact JSON of :class:`Bundle` as msgspec writes it: fields in
the order declared below, no whitespace, UTF-8, ``payload`` as standard base64 with padding,
``target.gateways`` sorted and unique (``["*"]`` for every gateway of the district). A decoder
re-encodes what it decoded and refuses anything that is not byte-identical (``non_canonical``),
so one bundle has exactly one byte string and "same version, same bytes" is well defined.

The *signature* is a detached Ed25519 signature over ``DOMAIN_PREFIX + canonical bundle bytes``.
The prefix keeps a bundle signature from ever being valid for any other message the centre's key
signs (and the reverse).

The *envelope* (what travels over MQTT and what ``edge-agent policy sign`` writes) is JSON::

    {"bundle": "<base64 of the canonical bundle bytes>",
     "signatures": [{"key_id": "<16 hex>", "sig": "<base64 of 64 bytes>"}]}

A key id is the first 16 hex digits of SHA-256 over the 32 raw bytes of the Ed25519 public key.
The bundle names its signer (``Bundle.key_id``); that key's signature must verify, and when a
threshold above one is asked for, further distinct pinned keys may co-sign.

Check order in :func:`verify_envelope` (each failure is a :class:`PolicyError` with its own
``reason``, see :class:`Reason`): size -> envelope and bundle structure -> signature -> payload
hash -> target -> validity window. Version (rollback) checks need the gateway's state and live in
the policy store.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Final, Literal

import msgspec

from edge_agent.errors import PolicyError
from edge_agent.policy.keys import (
    generate_private_key,
    key_id,
    load_private_key_pem,
    load_public_key_pem,
    private_key_to_pem,
    public_key_to_pem,
    trusted_key_set,
)
from edge_agent.policy.shadow_report import ShadowReport

if TYPE_CHECKING:  # cryptography is imported when a key is used, not by every gateway at start
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "DEFAULT_MAX_ENVELOPE_BYTES",
    "DOMAIN_PREFIX",
    "Bundle",
    "BundleKind",
    "Gate",
    "Reason",
    "SignatureEntry",
    "Target",
    "ValidationRecord",
    "build_bundle",
    "bundle_bytes",
    "bundle_sha256",
    "check_payload",
    "check_signatures",
    "check_target",
    "check_validation_record",
    "check_validity",
    "decode_validation_record",
    "encode_envelope",
    "encode_validation_record",
    "generate_private_key",
    "key_id",
    "load_private_key_pem",
    "load_public_key_pem",
    "parse_envelope",
    "private_key_to_pem",
    "public_key_to_pem",
    "record_sha256",
    "sign_bundle",
    "trusted_key_set",
    "verify_envelope",
]

DOMAIN_PREFIX: Final = b"district-lights/policy-bundle/v1\x00"
DEFAULT_MAX_ENVELOPE_BYTES: Final = 256 * 1024
MAX_SIGNATURES: Final = 8
# JSON numbers stay exact up to 2**53; SQLite integers are 64-bit. Versions and times fit both.
_MAX_INT: Final = 2**53 - 1


class Reason(StrEnum):
    """The ``PolicyError.reason`` keys this module and the policy store raise (countable)."""

    OVERSIZED = "oversized"
    TRUNCATED = "truncated"
    MALFORMED = "malformed"
    NON_CANONICAL = "non_canonical"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    THRESHOLD = "signature_threshold"
    PAYLOAD_MISMATCH = "payload_mismatch"
    WRONG_TARGET = "wrong_target"
    NOT_YET_VALID = "not_yet_valid"
    EXPIRED = "expired"
    ROLLBACK = "rollback"
    VERSION_CONFLICT = "version_conflict"
    INVALID_BUNDLE = "invalid_bundle"
    BAD_KEY = "bad_key"
    VALIDATION_REQUIRED = "validation_required"
    VALIDATION_FAILED = "validation_failed"
    VALIDATION_MISMATCH = "validation_mismatch"
    VALIDATION_INCONSISTENT = "validation_inconsistent"
    BAD_VALIDATION_RECORD = "bad_validation_record"
    STORE_CORRUPT = "store_corrupt"


BundleKind = Literal["lighting-policy", "dispatch-policy", "policy"]

_Name = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")]
_GatewaySel = Annotated[str, msgspec.Meta(pattern=r"^(\*|[A-Za-z0-9][A-Za-z0-9._:-]{0,63})$")]
_Sha256Hex = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]
_KeyId = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{16}$")]
_Epoch = Annotated[int, msgspec.Meta(ge=0, le=_MAX_INT)]
_Version = Annotated[int, msgspec.Meta(ge=1, le=_MAX_INT)]
_Sig = Annotated[bytes, msgspec.Meta(min_length=64, max_length=64)]


# --------------------------------------------------------------------------- validation record


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


# --------------------------------------------------------------------------- bundle


class Target(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Which gateways may accept a bundle: one district, and gateway ids or ``("*",)``."""

    district: _Name
    gateways: Annotated[tuple[_GatewaySel, ...], msgspec.Meta(min_length=1, max_length=4096)]


class Bundle(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The signed content. Field order is part of the canonical encoding: never reorder."""

    kind: BundleKind
    target: Target
    version: _Version
    issued_at: _Epoch
    not_before: _Epoch
    expires: _Epoch
    payload: bytes  # the policy TOML file exactly as written
    payload_sha256: _Sha256Hex
    validation_sha256: _Sha256Hex | None
    forced: bool  # signed without a passing validation record
    key_id: _KeyId  # the signer; its signature must be present and valid


class SignatureEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One detached signature in the envelope."""

    key_id: _KeyId
    sig: _Sig


class _Envelope(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    bundle: bytes
    signatures: Annotated[tuple[SignatureEntry, ...], msgspec.Meta(min_length=1, max_length=MAX_SIGNATURES)]


_BUNDLE_DECODER: Final = msgspec.json.Decoder(Bundle)
_ENVELOPE_DECODER: Final = msgspec.json.Decoder(_Envelope)
_ENCODER: Final = msgspec.json.Encoder()


def bundle_bytes(bundle: Bundle) -> bytes:
    """The canonical bytes of ``bundle`` (what is signed and what the store compares)."""
    return _ENCODER.encode(bundle)


def bundle_sha256(bundle: Bundle) -> str:
    """Hex SHA-256 of the canonical bundle bytes."""
    return hashlib.sha256(bundle_bytes(bundle)).hexdigest()


def _decode_error(where: str, exc: Exception) -> PolicyError:
    # msgspec raises UnicodeDecodeError (not DecodeError) for invalid UTF-8 inside a string.
    text = str(exc)
    if "truncated" in text:
        return PolicyError(Reason.TRUNCATED, f"{where}: {text}; the message was cut short")
    return PolicyError(Reason.MALFORMED, f"{where}: {text}; expected the format of docs/POLICY_BUNDLE.md")


def _check_structure(bundle: Bundle, where: str) -> None:
    gateways = bundle.target.gateways
    if "*" in gateways and len(gateways) > 1:
        raise PolicyError(Reason.MALFORMED, f"{where}: target.gateways mixes '*' with ids; use ['*'] alone")
    if list(gateways) != sorted(set(gateways)):
        raise PolicyError(Reason.NON_CANONICAL, f"{where}: target.gateways must be sorted and unique")
    if bundle.issued_at > bundle.expires:
        raise PolicyError(
            Reason.MALFORMED,
            f"{where}: issued_at ({bundle.issued_at}) is after expires ({bundle.expires})",
        )
    if bundle.expires <= bundle.not_before:
        raise PolicyError(
            Reason.MALFORMED,
            f"{where}: expires ({bundle.expires}) is not after not_before ({bundle.not_before})",
        )


def _decode_bundle(raw: bytes, where: str) -> Bundle:
    if not raw:
        raise PolicyError(Reason.TRUNCATED, f"{where}: empty")
    try:
        bundle = _BUNDLE_DECODER.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise _decode_error(where, exc) from None
    if bundle_bytes(bundle) != raw:
        raise PolicyError(
            Reason.NON_CANONICAL,
            f"{where}: bytes are not in canonical form; re-sign with `edge-agent policy sign`",
        )
    _check_structure(bundle, where)
    return bundle


def parse_envelope(
    data: bytes, max_size: int = DEFAULT_MAX_ENVELOPE_BYTES
) -> tuple[Bundle, tuple[SignatureEntry, ...]]:
    """Decode an envelope and its bundle; check structure only (no signature, target or time).

    Raises :class:`PolicyError` with reason ``oversized``, ``truncated``, ``malformed`` or
    ``non_canonical``. Anything else escaping from here is a bug (the fuzz tests hold us to it).
    """
    if len(data) > max_size:
        raise PolicyError(Reason.OVERSIZED, f"envelope is {len(data)} bytes, the limit is {max_size}")
    if not data.strip():
        raise PolicyError(Reason.TRUNCATED, "envelope: empty message")
    try:
        envelope = _ENVELOPE_DECODER.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise _decode_error("envelope", exc) from None
    ids = [s.key_id for s in envelope.signatures]
    if len(set(ids)) != len(ids):
        raise PolicyError(Reason.MALFORMED, "envelope: signatures: one key signed twice")
    return _decode_bundle(envelope.bundle, "envelope.bundle"), envelope.signatures


def encode_envelope(bundle: Bundle, signatures: Sequence[SignatureEntry]) -> bytes:
    """The JSON envelope for a bundle and its signatures (see the module docstring)."""
    return _ENCODER.encode(_Envelope(bundle=bundle_bytes(bundle), signatures=tuple(signatures)))


def check_signatures(
    bundle: Bundle,
    signatures: Sequence[SignatureEntry],
    trusted_keys: Mapping[str, Ed25519PublicKey],
    *,
    threshold: int = 1,
) -> frozenset[str]:
    """Verify signatures against the pinned keys; return the key ids that verified.

    ``unknown_key``: the bundle's signer is not pinned. ``bad_signature``: the signer's signature
    is missing or does not verify. ``signature_threshold``: fewer than ``threshold`` distinct
    pinned keys verified.
    """
    if bundle.key_id not in trusted_keys:
        pinned = ", ".join(sorted(trusted_keys)) or "none"
        raise PolicyError(
            Reason.UNKNOWN_KEY,
            f"bundle signed by key {bundle.key_id}, pinned keys: {pinned}; pin the centre's "
            "public key on the gateway or sign with a pinned key",
        )
    from cryptography.exceptions import InvalidSignature

    message = DOMAIN_PREFIX + bundle_bytes(bundle)
    verified: set[str] = set()
    for entry in signatures:
        key = trusted_keys.get(entry.key_id)
        if key is None:
            continue
        try:
            key.verify(entry.sig, message)
        except InvalidSignature:
            continue
        verified.add(entry.key_id)
    if bundle.key_id not in verified:
        raise PolicyError(
            Reason.BAD_SIGNATURE,
            f"no valid signature by key {bundle.key_id}; the bundle was altered or signed with another key",
        )
    if len(verified) < threshold:
        raise PolicyError(Reason.THRESHOLD, f"{len(verified)} pinned keys signed, {threshold} required")
    return frozenset(verified)


def check_payload(bundle: Bundle) -> None:
    """``payload_mismatch`` unless ``payload_sha256`` is the hash of the payload."""
    actual = hashlib.sha256(bundle.payload).hexdigest()
    if actual != bundle.payload_sha256:
        raise PolicyError(
            Reason.PAYLOAD_MISMATCH,
            f"payload hashes to {actual[:16]}..., the bundle says {bundle.payload_sha256[:16]}...",
        )


def check_target(bundle: Bundle, gateway_id: str, district: str) -> None:
    """``wrong_target`` unless the bundle names this district and this gateway (or ``*``)."""
    target = bundle.target
    if target.district != district:
        raise PolicyError(
            Reason.WRONG_TARGET,
            f"bundle is for district {target.district!r}, this gateway is in {district!r}",
        )
    if "*" not in target.gateways and gateway_id not in target.gateways:
        raise PolicyError(
            Reason.WRONG_TARGET,
            f"bundle targets gateways {list(target.gateways)}, this gateway is {gateway_id!r}",
        )


def check_validity(bundle: Bundle, now: int) -> None:
    """``not_yet_valid`` before ``not_before``, ``expired`` at or after ``expires``."""
    if now < bundle.not_before:
        raise PolicyError(
            Reason.NOT_YET_VALID,
            f"valid from {bundle.not_before}, now is {now}; wait, or check the gateway clock",
        )
    if now >= bundle.expires:
        raise PolicyError(
            Reason.EXPIRED,
            f"expired at {bundle.expires}, now is {now} (the later of the wall clock and the "
            "last known time); sign a new version",
        )


def verify_envelope(
    data: bytes,
    trusted_keys: Mapping[str, Ed25519PublicKey],
    gateway_id: str,
    district: str,
    now: int,
    *,
    max_size: int = DEFAULT_MAX_ENVELOPE_BYTES,
    threshold: int = 1,
) -> Bundle:
    """Everything a gateway checks without its stored state; return the verified bundle.

    ``now`` must already be the later of the wall clock and the last known time.
    """
    bundle, signatures = parse_envelope(data, max_size)
    check_signatures(bundle, signatures, trusted_keys, threshold=threshold)
    check_payload(bundle)
    check_target(bundle, gateway_id, district)
    check_validity(bundle, now)
    return bundle


def build_bundle(
    payload: bytes,
    *,
    kind: BundleKind,
    district: str,
    gateways: Iterable[str],
    version: int,
    issued_at: int,
    not_before: int,
    expires: int,
    key_id: str,
    validation: ValidationRecord | None = None,
    force: bool = False,
) -> Bundle:
    """Assemble a bundle, refusing a policy without a passing validation record unless forced.

    With ``force``, a missing, failing or mismatched record still yields a bundle, with
    ``forced=True`` (and ``validation_sha256`` set only when the record is for this payload).
    Field values are checked exactly as a gateway will (``invalid_bundle`` otherwise).
    """
    forced = False
    validation_sha: str | None = None
    if validation is None:
        if not force:
            raise PolicyError(
                Reason.VALIDATION_REQUIRED,
                "no validation record; run `twin validate POLICY --scenario S` and pass its "
                "record, or sign with --force",
            )
        forced = True
    else:
        try:
            check_validation_record(validation, payload)
            validation_sha = record_sha256(validation)
        except PolicyError as exc:
            if not force:
                raise
            forced = True
            if exc.reason != Reason.VALIDATION_MISMATCH:
                validation_sha = record_sha256(validation)
    bundle = Bundle(
        kind=kind,
        target=Target(district=district, gateways=tuple(sorted(set(gateways)))),
        version=version,
        issued_at=issued_at,
        not_before=not_before,
        expires=expires,
        payload=payload,
        payload_sha256=hashlib.sha256(payload).hexdigest(),
        validation_sha256=validation_sha,
        forced=forced,
        key_id=key_id,
    )
    try:
        _decode_bundle(bundle_bytes(bundle), "bundle")
    except PolicyError as exc:
        raise PolicyError(Reason.INVALID_BUNDLE, exc.detail) from None
    return bundle


def sign_bundle(bundle: Bundle, key: Ed25519PrivateKey, *cosigners: Ed25519PrivateKey) -> bytes:
    """Sign ``bundle`` with its named signer ``key`` (and co-signers); return the envelope."""
    if key_id(key.public_key()) != bundle.key_id:
        raise PolicyError(
            Reason.BAD_KEY,
            f"the bundle names signer {bundle.key_id}, the key given is "
            f"{key_id(key.public_key())}; build the bundle with this key's id",
        )
    message = DOMAIN_PREFIX + bundle_bytes(bundle)
    entries = [SignatureEntry(key_id=key_id(k.public_key()), sig=k.sign(message)) for k in (key, *cosigners)]
    if len({e.key_id for e in entries}) != len(entries):
        raise PolicyError(Reason.BAD_KEY, "the same key was given twice")
    return encode_envelope(bundle, entries)
