"""What a gateway checks on a signed policy bundle without its stored state.

Owns: :func:`verify_envelope` and its steps, in this order (each failure a ``PolicyError`` with
its own :class:`~edge_agent.policy.bundle.Reason`): size -> envelope and bundle structure
(``parse_envelope``) -> signatures against the pinned keys -> payload hash -> target ->
validity window. Version (rollback) checks need the gateway's state: the policy store's.
Pure: no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from edge_agent.errors import PolicyError
from edge_agent.policy.bundle import (
    DEFAULT_MAX_ENVELOPE_BYTES,
    DOMAIN_PREFIX,
    Bundle,
    Reason,
    SignatureEntry,
    bundle_bytes,
    parse_envelope,
)

if TYPE_CHECKING:  # cryptography is imported when a key is used, not by every gateway at start
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = ["check_payload", "check_signatures", "check_target", "check_validity", "verify_envelope"]


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
