"""Ed25519 keys of policy bundles, in memory: generate, id, PEM in and out.

Owns: the key helpers bundles are signed (bundle_sign.py) and verified (bundle_verify.py) with. cryptography is
imported inside each function: a gateway without pinned keys never loads it (about 7 MB of
resident memory), one with keys loads it when it reads them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import TYPE_CHECKING

from edge_agent.errors import PolicyError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


def generate_private_key() -> Ed25519PrivateKey:
    """A fresh Ed25519 signing key."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate()


def key_id(public_key: Ed25519PublicKey) -> str:
    """First 16 hex digits of SHA-256 over the raw 32-byte public key."""
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def private_key_to_pem(key: Ed25519PrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted: protect the file (0600, offline machine)."""
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_key_to_pem(key: Ed25519PublicKey) -> bytes:
    """SubjectPublicKeyInfo PEM."""
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_private_key_pem(data: bytes, *, source: str = "private key") -> Ed25519PrivateKey:
    """An Ed25519 private key from unencrypted PEM; ``bad_key`` naming ``source`` otherwise."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise PolicyError(
            "bad_key",
            f"{source}: not an unencrypted PEM private key ({exc}); create one with `edge-agent policy keygen`",
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise PolicyError("bad_key", f"{source}: not an Ed25519 key")
    return key


def load_public_key_pem(data: bytes, *, source: str = "public key") -> Ed25519PublicKey:
    """An Ed25519 public key from PEM; ``bad_key`` naming ``source`` otherwise."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise PolicyError(
            "bad_key",
            f"{source}: not a PEM public key ({exc}); use the .pub file from `edge-agent policy keygen`",
        ) from None
    if not isinstance(key, Ed25519PublicKey):
        raise PolicyError("bad_key", f"{source}: not an Ed25519 key")
    return key


def trusted_key_set(keys: Iterable[Ed25519PublicKey]) -> dict[str, Ed25519PublicKey]:
    """Pinned keys indexed by their key id."""
    return {key_id(k): k for k in keys}
