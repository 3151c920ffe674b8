"""The signed policy bundle's format: the bundle, its canonical bytes and the on-wire envelope.

Owns: :class:`Bundle` and its canonical encoding, the envelope (:func:`parse_envelope`,
:func:`encode_envelope`) with its structural checks, and :class:`Reason`, the ``PolicyError``
reasons of every bundle module and the policy store. The rest of the bundle's life has one
module each: ``validation_record`` (what ``twin validate`` writes), ``bundle_verify`` (the
stateless checks a gateway runs), ``bundle_sign`` (assembling and signing), ``keys`` (Ed25519
keys in memory).

Must not import: asyncio, sqlite3, edge_agent.engine, edge_agent.transports, edge_agent.store,
edge_agent.agent, or anything that does I/O. Reading key files, persisting the accepted version
and the last known time live in ``edge_agent.agent.policy_keys`` and ``edge_agent.store.policy_store``.

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

The checks a gateway runs and their order are ``edge_agent.policy.bundle_verify``'s.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from enum import StrEnum
from typing import Annotated, Final, Literal

import msgspec

from edge_agent.errors import PolicyError

__all__ = [
    "DEFAULT_MAX_ENVELOPE_BYTES",
    "DOMAIN_PREFIX",
    "Bundle",
    "BundleKind",
    "Reason",
    "SignatureEntry",
    "Target",
    "bundle_bytes",
    "bundle_sha256",
    "decode_bundle",
    "encode_envelope",
    "parse_envelope",
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


def decode_bundle(raw: bytes, where: str) -> Bundle:
    """The bundle in ``raw``, refused unless canonical and well-formed (``truncated``,
    ``malformed``, ``non_canonical``); ``where`` names it in the error."""
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
    return decode_bundle(envelope.bundle, "envelope.bundle"), envelope.signatures


def encode_envelope(bundle: Bundle, signatures: Sequence[SignatureEntry]) -> bytes:
    """The JSON envelope for a bundle and its signatures (see the module docstring)."""
    return _ENCODER.encode(_Envelope(bundle=bundle_bytes(bundle), signatures=tuple(signatures)))
