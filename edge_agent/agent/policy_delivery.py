"""Signed policy bundles arriving at a gateway: verify, check, accept durably, or refuse.

Owns: choosing the policy a gateway starts with (the last accepted bundle, else the config's
policy file as version 0) and turning a received envelope into a new active policy or a
specific refusal. The last good policy stays active on any failure. The acceptance state is
the ``PolicyStore`` (fsynced before this returns); the caller applies and acknowledges.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from edge_agent.agent.policy_keys import load_trusted_keys
from edge_agent.config import GatewayConfig, policy_problems
from edge_agent.errors import ConfigError, PolicyError
from edge_agent.policy.bundle_verify import verify_envelope
from edge_agent.policy.model import Policy, parse_policy
from edge_agent.store.policy_store import PolicyStore

log = logging.getLogger("edge_agent.policy")


@dataclass(frozen=True)
class Outcome:
    status: str  # accepted | already_active | rejected
    version: int | None
    policy: Policy | None = None  # set when a new policy must be installed
    reason: str | None = None
    detail: str | None = None
    # wall-clock stamps of the stages (``verified``: signatures, target, validity and the
    # policy's fit checked; ``stored``: accepted and fsynced), for the rollout breakdown
    stamps: dict[str, float] = field(default_factory=dict)


class PolicyDelivery:
    def __init__(self, config: GatewayConfig, db_path: Path) -> None:
        self.config = config
        self.store = PolicyStore(db_path)
        trust = config.file.trust
        self.max_bytes = trust.max_bundle_bytes if trust else 0
        self.keys = load_trusted_keys([config.path.parent / k for k in trust.keys]) if trust else {}

    def close(self) -> None:
        self.store.close()

    def startup_policy(self) -> tuple[Policy, int]:
        """The last accepted bundle's policy if there is one, else the config file's (version 0)."""
        active = self.store.active("policy")
        if active is not None:
            try:
                policy = parse_policy(active.payload, f"bundle v{active.version}")
                if not policy_problems(self.config.file, policy, f"bundle v{active.version}"):
                    return policy, active.version
            except ConfigError:
                log.exception("stored bundle v%s unusable, running the config's policy", active.version)
        return self.config.policy, 0

    def receive(self, envelope: bytes, now: float) -> Outcome:
        if not self.keys:
            return Outcome("rejected", None, reason="no_trusted_keys", detail="add [trust] keys to the gateway config")
        gateway = self.config.file.gateway
        try:
            floor = self.store.last_known_time() or 0
            bundle = verify_envelope(
                envelope, self.keys, gateway.id, gateway.district, int(max(now, floor)), max_size=self.max_bytes
            )
            source = f"bundle v{bundle.version}"
            policy = parse_policy(bundle.payload, source)
            _check_compatible(self.config, policy, source)
            verified = time.time()
            result = self.store.accept(
                envelope,
                trusted_keys=self.keys,
                gateway_id=gateway.id,
                district=gateway.district,
                wall_clock_now=now,
                max_size=self.max_bytes,
            )
        except PolicyError as exc:
            log.warning("policy bundle refused: %s", exc)
            return Outcome("rejected", None, reason=exc.reason, detail=exc.detail)
        except ConfigError as exc:
            log.warning("policy bundle refused: invalid policy: %s", exc)
            return Outcome("rejected", None, reason="invalid_policy", detail=str(exc))
        if not result.changed:
            return Outcome("already_active", result.bundle.version)
        log.info("policy v%s accepted (%s)", result.bundle.version, policy.policy.name)
        stamps = {"verified": verified, "stored": time.time()}
        return Outcome("accepted", result.bundle.version, policy=policy, stamps=stamps)


def _check_compatible(config: GatewayConfig, policy: Policy, source: str) -> None:
    problems = policy_problems(config.file, policy, source)
    if problems:
        raise PolicyError("incompatible", "; ".join(str(p) for p in problems))
