"""The district's digital twin: lighting in Numba kernels, incidents and dispatch in SimPy.

Owns: nothing but package set-up. The one thing done here, before anything imports numba, is to
point Numba's on-disk cache at a directory keyed by the source of the policy code and of our
kernels.

Why: ``@njit(cache=True)`` keys a cached kernel on the kernel's own file (path and timestamp)
only. Our kernels call ``edge_agent.policy`` functions registered with ``register_jitable``; a
change in ``edge_agent/policy/lighting.py`` would not invalidate the cache and the twin would go
on running the *old* policy code, silently breaking the product's central promise (the twin runs
exactly what the gateways run). Keying the directory by a hash of those sources makes any change
start a fresh cache. ``NUMBA_CACHE_DIR`` set by the caller wins (``setdefault``).

Must not import: edge_agent.agent, edge_agent.engine, edge_agent.transports, edge_agent.store.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["numba_cache_dir", "source_fingerprint"]


def source_fingerprint() -> str:
    """12 hex digits of SHA-256 over the policy sources and the twin's kernel sources."""
    here = Path(__file__).resolve().parent
    policy_dir = here.parent / "edge_agent" / "policy"
    digest = hashlib.sha256()
    for path in sorted(policy_dir.glob("*.py")) + sorted((here / "kernels").glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def numba_cache_dir() -> Path:
    """Where Numba keeps compiled kernels for this exact combination of sources."""
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "district-twin" / f"numba-{source_fingerprint()}"


os.environ.setdefault("NUMBA_CACHE_DIR", str(numba_cache_dir()))
