"""Making a signed policy bundle: assemble it from a validated policy file, sign it.

Owns: :func:`build_bundle` (refuses a policy without a passing validation record unless forced)
and :func:`sign_bundle` (the envelope, signed by the bundle's named signer and any co-signers).
Used by ``edge-agent policy sign``, the twin and the tests. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import TYPE_CHECKING

from edge_agent.errors import PolicyError
from edge_agent.policy.bundle import (
    DOMAIN_PREFIX,
    Bundle,
    BundleKind,
    Reason,
    SignatureEntry,
    Target,
    bundle_bytes,
    decode_bundle,
    encode_envelope,
)
from edge_agent.policy.keys import key_id
from edge_agent.policy.validation_record import ValidationRecord, check_validation_record, record_sha256

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = ["build_bundle", "sign_bundle"]


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
        decode_bundle(bundle_bytes(bundle), "bundle")
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
