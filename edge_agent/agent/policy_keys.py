"""Policy signing keys on disk: write a key pair, load a private key, load the pinned public keys.

Owns: the file side of the key helpers (the in-memory side is ``edge_agent.policy.keys``, which
must stay free of I/O). Used by ``edge-agent policy`` and by the agent when it pins the centre's
keys at start-up.
Must not import: edge_agent.engine, edge_agent.transports, edge_agent.store.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from edge_agent.errors import PolicyError
from edge_agent.policy.bundle import Reason
from edge_agent.policy.keys import (
    generate_private_key,
    key_id,
    load_private_key_pem,
    load_public_key_pem,
    private_key_to_pem,
    public_key_to_pem,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


__all__ = ["load_private_key", "load_trusted_keys", "write_keypair"]

PRIVATE_SUFFIX = ".key"
PUBLIC_SUFFIXES = (".pub", ".pem")


def _write_new(path: Path, data: bytes, mode: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise PolicyError("key_exists", f"{path} already exists; choose another --name or --out") from None
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(path, mode)  # the umask may have narrowed it; never widened past ``mode``


def write_keypair(out_dir: Path, name: str = "centre") -> tuple[Path, Path, str]:
    """Create ``out_dir/NAME.key`` (0600) and ``out_dir/NAME.pub``; return both paths and key id.

    Refuses to overwrite existing files (``key_exists``).
    """
    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    private = generate_private_key()
    private_path = out_dir / f"{name}{PRIVATE_SUFFIX}"
    public_path = out_dir / f"{name}.pub"
    if public_path.exists():
        raise PolicyError("key_exists", f"{public_path} already exists; choose another --name")
    _write_new(private_path, private_key_to_pem(private), 0o600)
    _write_new(public_path, public_key_to_pem(private.public_key()), 0o644)
    return private_path, public_path, key_id(private.public_key())


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """The signing key in ``path``; refuses a file that group or others can read (``bad_key``)."""
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        raise PolicyError(Reason.BAD_KEY, f"{path}: cannot read ({exc.strerror})") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise PolicyError(
            Reason.BAD_KEY,
            f"{path}: permissions {stat.S_IMODE(mode):04o} let others read the signing key; run `chmod 600 {path}`",
        )
    return load_private_key_pem(data, source=str(path))


def load_trusted_keys(sources: Path | Sequence[Path]) -> dict[str, Ed25519PublicKey]:
    """The pinned public keys, by key id, from PEM files and/or directories of them.

    A directory contributes its ``*.pub`` and ``*.pem`` files (private ``*.key`` files are
    ignored). A file that is not an Ed25519 public key, or an empty result, is an error
    (``bad_key``, ``no_trusted_keys``): a gateway must fail closed, never trust nothing silently.
    """
    paths: list[Path] = []
    for source in [sources] if isinstance(sources, Path) else list(sources):
        if source.is_dir():
            paths += sorted(p for p in source.iterdir() if p.suffix in PUBLIC_SUFFIXES)
        else:
            paths.append(source)
    keys: dict[str, Ed25519PublicKey] = {}
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise PolicyError(Reason.BAD_KEY, f"{path}: cannot read ({exc.strerror})") from None
        key = load_public_key_pem(data, source=str(path))
        keys[key_id(key)] = key
    if not keys:
        where = ", ".join(str(s) for s in ([sources] if isinstance(sources, Path) else sources))
        raise PolicyError(
            "no_trusted_keys",
            f"no public keys found in {where or 'nothing'}; copy the centre's .pub file there",
        )
    return keys
