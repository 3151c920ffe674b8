"""Policy bundle attacks, in the style of the TUF conformance suite.

A ``Centre`` signs bundles (and an attacker forges them); a ``Gateway`` wraps a real
:class:`PolicyStore` on disk. Every attack is offered to a gateway that already runs a good
policy, and must be refused with its own ``PolicyError.reason`` while the stored state (the
active rows, the history and the clock floor, read straight from SQLite) stays byte-for-byte
the same. The kill -9 cases run a real subprocess and SIGKILL it between verify and apply.
"""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.errors import PolicyError
from edge_agent.policy.bundle import (
    DOMAIN_PREFIX,
    Bundle,
    SignatureEntry,
    bundle_bytes,
    encode_envelope,
    parse_envelope,
)
from edge_agent.policy.bundle_sign import build_bundle, sign_bundle
from edge_agent.policy.keys import key_id, public_key_to_pem, trusted_key_set
from edge_agent.store.policy_store import AcceptResult, PolicyStore

REPO = Path(__file__).resolve().parents[1]
T0 = 1_750_000_000
DAY = 86400
DISTRICT = "old-town"
GATEWAY = "gw-7"


@dataclass
class Centre:
    """The signing side; ``key`` is pinned on the gateway unless a test swaps it."""

    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)

    def bundle(self, version: int, **kw: object) -> Bundle:
        args: dict[str, object] = {
            "kind": "policy",
            "district": DISTRICT,
            "gateways": ["*"],
            "version": version,
            "issued_at": T0,
            "not_before": T0,
            "expires": T0 + 30 * DAY,
            "key_id": key_id(self.key.public_key()),
            "force": True,
        }
        payload = kw.pop("payload", f"# policy v{version}\nlevel = {version}\n".encode())
        args.update(kw)
        return build_bundle(payload, **args)  # type: ignore[arg-type]

    def sign(self, version: int, **kw: object) -> bytes:
        return sign_bundle(self.bundle(version, **kw), self.key)


def snapshot(db: Path) -> tuple[object, ...]:
    """Everything the policy store persists, read with a separate connection."""
    with sqlite3.connect(db) as conn:
        return (
            conn.execute("SELECT * FROM policy_active ORDER BY kind").fetchall(),
            conn.execute("SELECT * FROM policy_history ORDER BY seq").fetchall(),
            conn.execute("SELECT * FROM policy_clock").fetchall(),
        )


@dataclass
class Gateway:
    store: PolicyStore
    centre: Centre
    db: Path

    def accept(self, envelope: bytes, *, now: float = T0 + DAY, **kw: object) -> AcceptResult:
        args: dict[str, object] = {
            "trusted_keys": trusted_key_set([self.centre.key.public_key()]),
            "gateway_id": GATEWAY,
            "district": DISTRICT,
            "wall_clock_now": now,
        }
        args.update(kw)
        return self.store.accept(envelope, **args)  # type: ignore[arg-type]


@pytest.fixture
def centre() -> Centre:
    return Centre()


@pytest.fixture
def gateway(tmp_path: Path, centre: Centre) -> Iterator[Gateway]:
    """A gateway running v1 then v2 (so both a rollback target and a good state exist)."""
    db = tmp_path / "gateway.sqlite"
    store = PolicyStore(db)
    gw = Gateway(store, centre, db)
    gw.accept(centre.sign(1))
    gw.accept(centre.sign(2))
    yield gw
    gw.store.close()


def _refused(gateway: Gateway, envelope: bytes, reason: str, **kw: Any) -> PolicyError:
    before_active = gateway.store.active()
    before_rows = snapshot(gateway.db)
    with pytest.raises(PolicyError) as err:
        gateway.accept(envelope, **kw)
    assert err.value.reason == reason, err.value
    assert gateway.store.active() == before_active
    assert snapshot(gateway.db) == before_rows
    active = gateway.store.active()
    assert active is not None
    assert active.version == 2
    assert active.bundle == bundle_bytes(gateway.centre.bundle(2))
    return err.value


# --------------------------------------------------------------------------- signature attacks


def test_bad_signature_bit_flip(gateway: Gateway) -> None:
    bundle, sigs = parse_envelope(gateway.centre.sign(3))
    sig = bytearray(sigs[0].sig)
    sig[10] ^= 0x01
    forged = encode_envelope(bundle, [SignatureEntry(key_id=sigs[0].key_id, sig=bytes(sig))])
    _refused(gateway, forged, "bad_signature")


def test_bad_signature_altered_payload_keeps_old_signature(gateway: Gateway) -> None:
    genuine = gateway.centre.bundle(3)
    _, sigs = parse_envelope(sign_bundle(genuine, gateway.centre.key))
    evil = build_bundle(
        b"level = 0  # lights off\n",
        kind="policy",
        district=DISTRICT,
        gateways=["*"],
        version=3,
        issued_at=T0,
        not_before=T0,
        expires=T0 + 30 * DAY,
        key_id=genuine.key_id,
        force=True,
    )
    _refused(gateway, encode_envelope(evil, sigs), "bad_signature")


def test_bad_signature_attacker_key_claims_the_centre_key_id(gateway: Gateway) -> None:
    attacker = Ed25519PrivateKey.generate()
    bundle = gateway.centre.bundle(3)
    sig = attacker.sign(DOMAIN_PREFIX + bundle_bytes(bundle))
    forged = encode_envelope(bundle, [SignatureEntry(key_id=bundle.key_id, sig=sig)])
    _refused(gateway, forged, "bad_signature")


def test_unknown_key(gateway: Gateway) -> None:
    attacker = Centre()
    err = _refused(gateway, attacker.sign(3), "unknown_key")
    assert key_id(attacker.key.public_key()) in err.detail


def test_signature_for_another_purpose_is_not_a_bundle_signature(gateway: Gateway) -> None:
    """Domain separation: the centre's signature over the bare bytes (no prefix) is refused."""
    bundle = gateway.centre.bundle(3)
    bare = gateway.centre.key.sign(bundle_bytes(bundle))
    forged = encode_envelope(bundle, [SignatureEntry(key_id=bundle.key_id, sig=bare)])
    _refused(gateway, forged, "bad_signature")


def test_payload_hash_mismatch_even_when_signed(gateway: Gateway) -> None:
    """A (buggy) signer's payload_sha256 that does not match: refused after the signature."""
    good = gateway.centre.bundle(3)
    bad = msgspec.structs.replace(good, payload_sha256="0" * 64)
    _refused(gateway, sign_bundle(bad, gateway.centre.key), "payload_mismatch")


# --------------------------------------------------------------------------- version attacks


def test_rollback_to_an_older_validly_signed_version(gateway: Gateway) -> None:
    err = _refused(gateway, gateway.centre.sign(1), "rollback")
    assert "v2" in err.detail


def test_same_version_different_bytes(gateway: Gateway) -> None:
    _refused(gateway, gateway.centre.sign(2, payload=b"level = 99\n"), "version_conflict")
    # even a different issued_at with the same payload is a different bundle
    _refused(gateway, gateway.centre.sign(2, issued_at=T0 + 5), "version_conflict")


def test_same_bytes_is_a_no_op(gateway: Gateway) -> None:
    before = snapshot(gateway.db)
    result = gateway.accept(gateway.centre.sign(2), now=T0 + 2 * DAY)
    assert result.status == "already_active"
    assert result.changed is False
    assert snapshot(gateway.db) == before  # nothing written, not even the clock


def test_redelivery_of_the_active_bundle_after_it_expired_is_still_a_no_op(
    gateway: Gateway,
) -> None:
    """A retained MQTT message re-delivered late must not raise an alarm every reconnect."""
    result = gateway.accept(gateway.centre.sign(2), now=T0 + 365 * DAY)
    assert result.status == "already_active"


# --------------------------------------------------------------------------- time attacks


def test_expired(gateway: Gateway) -> None:
    env = gateway.centre.sign(3, not_before=T0 - 10 * DAY, expires=T0)
    _refused(gateway, env, "expired", now=T0 + DAY)


def test_expires_exactly_now_is_expired(gateway: Gateway) -> None:
    _refused(gateway, gateway.centre.sign(3, expires=T0 + DAY), "expired", now=T0 + DAY)


def test_not_yet_valid(gateway: Gateway) -> None:
    env = gateway.centre.sign(3, not_before=T0 + 10 * DAY, expires=T0 + 40 * DAY)
    _refused(gateway, env, "not_yet_valid", now=T0 + DAY)


def test_clock_set_back_cannot_revive_an_expired_bundle(gateway: Gateway) -> None:
    """The gateway saw time T0+1d (floor persisted); its clock then jumps back to T0-100d.

    A bundle valid only until T0+12h (withheld by an attacker: a freeze) is expired by the
    floor, although the wall clock alone would accept it. The floor survives a restart.
    """
    assert gateway.store.last_known_time() == T0 + DAY
    gateway.store.close()
    gateway.store = PolicyStore(gateway.db)  # restart: the floor is on disk
    withheld = gateway.centre.sign(3, not_before=T0 - 200 * DAY, expires=T0 + DAY // 2)
    err = _refused(gateway, withheld, "expired", now=T0 - 100 * DAY)
    assert str(T0 + DAY) in err.detail


def test_clock_floor_advances_with_observations_and_accepted_issue_times(
    gateway: Gateway,
) -> None:
    assert gateway.store.observe_clock(T0 + 5 * DAY) == T0 + 5 * DAY
    assert gateway.store.observe_clock(T0) == T0 + 5 * DAY  # never goes back
    env = gateway.centre.sign(3, issued_at=T0 + 6 * DAY, expires=T0 + 60 * DAY)
    gateway.accept(env, now=T0 + 2 * DAY)  # wall clock behind; the floor rules
    assert gateway.store.last_known_time() == T0 + 6 * DAY
    _refused_v3 = gateway.centre.sign(4, expires=T0 + 6 * DAY)
    with pytest.raises(PolicyError) as err:
        gateway.accept(_refused_v3, now=T0)
    assert err.value.reason == "expired"


# --------------------------------------------------------------------------- target attacks


def test_wrong_district(gateway: Gateway) -> None:
    _refused(gateway, gateway.centre.sign(3, district="new-town"), "wrong_target")


def test_wrong_gateway(gateway: Gateway) -> None:
    env = gateway.centre.sign(3, gateways=["gw-1", "gw-2"])
    err = _refused(gateway, env, "wrong_target")
    assert GATEWAY in err.detail
    # listed explicitly: accepted
    result = gateway.accept(gateway.centre.sign(3, gateways=["gw-1", GATEWAY]))
    assert result.changed is True


# --------------------------------------------------------------------------- size and shape


def test_oversized(gateway: Gateway) -> None:
    env = gateway.centre.sign(3, payload=b"#" * 300_000)
    _refused(gateway, env, "oversized")
    _refused(gateway, gateway.centre.sign(3), "oversized", max_size=100)


def test_truncated_at_every_cut_point(gateway: Gateway) -> None:
    env = gateway.centre.sign(3)
    before = snapshot(gateway.db)
    reasons = set()
    for cut in range(len(env)):
        with pytest.raises(PolicyError) as err:
            gateway.accept(env[:cut])
        reasons.add(err.value.reason)
    assert reasons == {"truncated"}
    assert snapshot(gateway.db) == before


def test_truncated_inner_bundle(gateway: Gateway) -> None:
    bundle, sigs = parse_envelope(gateway.centre.sign(3))
    raw = bundle_bytes(bundle)[:-20]
    env = json.dumps(
        {
            "bundle": base64.b64encode(raw).decode(),
            "signatures": [{"key_id": sigs[0].key_id, "sig": base64.b64encode(sigs[0].sig).decode()}],
        }
    ).encode()
    _refused(gateway, env, "truncated")


@pytest.mark.parametrize(
    "data",
    [
        b"not json at all",
        b'{"bundle": "!!!", "signatures": []}',
        b'{"bundle": "e30=", "signatures": [{"key_id": "zz", "sig": ""}]}',
        b'{"bundle": "e30=", "signatures": [], "extra": 1}',
        b"[" * 10_000,
        b'{"bundle": "\xff\xfe", "signatures": []}',
    ],
    ids=["text", "bad-base64", "bad-sig-entry", "unknown-field", "deep-nesting", "bad-utf8"],
)
def test_malformed(gateway: Gateway, data: bytes) -> None:
    _refused(gateway, data, "malformed")


def test_non_canonical_signed_bytes(gateway: Gateway) -> None:
    raw = bundle_bytes(gateway.centre.bundle(3)).replace(b'"version":3', b'"version":3.0')
    sig = gateway.centre.key.sign(DOMAIN_PREFIX + raw)
    env = json.dumps(
        {
            "bundle": base64.b64encode(raw).decode(),
            "signatures": [
                {
                    "key_id": key_id(gateway.centre.key.public_key()),
                    "sig": base64.b64encode(sig).decode(),
                }
            ],
        }
    ).encode()
    with pytest.raises(PolicyError) as err:
        gateway.accept(env)
    assert err.value.reason in {"non_canonical", "malformed"}


# --------------------------------------------------------------------------- forced, kinds


def test_forced_bundle_is_accepted_and_flagged(gateway: Gateway) -> None:
    gateway.accept(gateway.centre.sign(3))  # Centre.bundle forces (no validation record)
    active = gateway.store.active()
    assert active is not None
    assert active.forced is True
    assert active.decode().forced is True
    assert gateway.store.history()[-1][3] is True


def test_kinds_have_separate_version_lines(gateway: Gateway) -> None:
    gateway.accept(gateway.centre.sign(1, kind="lighting-policy"))
    lighting = gateway.store.active("lighting-policy")
    assert lighting is not None
    assert lighting.version == 1
    active = gateway.store.active()
    assert active is not None
    assert active.version == 2


# --------------------------------------------------------------------------- concurrency


def test_two_processes_racing_the_same_version_one_wins(gateway: Gateway) -> None:
    second = PolicyStore(gateway.db)
    a = gateway.centre.sign(3, payload=b"a = 1\n")
    b = gateway.centre.sign(3, payload=b"b = 1\n")
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def run(store: PolicyStore, env: bytes) -> None:
        barrier.wait()
        try:
            store.accept(
                env,
                trusted_keys=trusted_key_set([gateway.centre.key.public_key()]),
                gateway_id=GATEWAY,
                district=DISTRICT,
                wall_clock_now=T0 + DAY,
            )
            outcomes.append("accepted")
        except PolicyError as exc:
            outcomes.append(exc.reason)

    threads = [threading.Thread(target=run, args=(s, e)) for s, e in [(gateway.store, a), (second, b)]]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    second.close()
    assert sorted(outcomes) == ["accepted", "version_conflict"]


# --------------------------------------------------------------------------- kill -9


CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from edge_agent.agent.policy_keys import load_trusted_keys
    from edge_agent.errors import PolicyError
    from edge_agent.store.policy_store import AcceptResult, PolicyStore

    db, pub, kill_at, *envelopes = sys.argv[1:]

    def hook(point):
        if point == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    store = PolicyStore(db, fault_hook=hook)
    keys = load_trusted_keys(Path(pub))
    for env in envelopes:
        try:
            store.accept(Path(env).read_bytes(), trusted_keys=keys, gateway_id=%(gw)r,
                         district=%(district)r, wall_clock_now=%(now)d)
            print("accepted", env, flush=True)
        except PolicyError as exc:
            print("refused", env, exc.reason, flush=True)
    print("done", flush=True)
    """
) % {"gw": GATEWAY, "district": DISTRICT, "now": T0 + DAY}


def _child(db: Path, pub: Path, kill_at: str, envelopes: list[Path]) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(db), str(pub), kill_at, *map(str, envelopes)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )


@pytest.fixture
def on_disk(tmp_path: Path, gateway: Gateway) -> Callable[[int], Path]:
    """Writes the centre's public key and envelopes of given versions to files."""
    pub_dir = tmp_path / "pinned"
    pub_dir.mkdir()
    (pub_dir / "centre.pub").write_bytes(public_key_to_pem(gateway.centre.key.public_key()))

    def write(version: int) -> Path:
        path = tmp_path / f"v{version}.json"
        path.write_bytes(gateway.centre.sign(version))
        return path

    return write


def _integrity_ok(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


@pytest.mark.parametrize(
    ("kill_at", "expected_version"),
    [("verified", 2), ("written", 2), ("committed", 3)],
    ids=["after-verify-before-write", "after-write-before-commit", "after-commit"],
)
def test_kill_9_between_verify_and_apply(
    gateway: Gateway, on_disk: Callable[[int], Path], kill_at: str, expected_version: int
) -> None:
    envelope = on_disk(3)
    pub = envelope.parent / "pinned"
    gateway.store.close()
    proc = _child(gateway.db, pub, kill_at, [envelope])
    out, errors = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, (out, errors)
    assert "accepted" not in out  # killed before accept() returned
    _integrity_ok(gateway.db)
    store = PolicyStore(gateway.db)
    active = store.active()
    assert active is not None
    assert active.version == expected_version
    assert active.bundle == bundle_bytes(gateway.centre.bundle(expected_version))
    if expected_version == 3:
        assert active.envelope == envelope.read_bytes()
    # The next delivery after the restart goes through (or is a no-op if it already did).
    result = store.accept(
        envelope.read_bytes(),
        trusted_keys=trusted_key_set([gateway.centre.key.public_key()]),
        gateway_id=GATEWAY,
        district=DISTRICT,
        wall_clock_now=T0 + DAY,
    )
    assert result.status == ("already_active" if expected_version == 3 else "accepted")
    store.close()


def test_kill_9_at_random_moments(gateway: Gateway, on_disk: Callable[[int], Path]) -> None:
    """A child accepts ten new versions in a row; it is SIGKILLed at a random moment. Repeat.

    After every kill: integrity ok, the active policy is exactly one of the signed versions,
    byte for byte, and versions never go backwards.
    """
    pub = on_disk(3).parent / "pinned"
    gateway.store.close()
    rng = random.Random(20250615)
    last = 2
    kills = 0
    versions: list[int] = []
    for _ in range(8):
        envelopes = [on_disk(v) for v in range(last + 1, last + 11)]
        proc = _child(gateway.db, pub, "never", envelopes)
        # wait for the child to start accepting, then kill it somewhere in the stream
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith(("accepted", "refused", "done")), first
        try:
            proc.wait(timeout=rng.uniform(0.0, 0.05))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.communicate(timeout=30)
        _integrity_ok(gateway.db)
        with PolicyStore(gateway.db) as store:
            active = store.active()
        assert active is not None
        assert active.version >= last
        versions.append(active.version)
        assert active.bundle == bundle_bytes(gateway.centre.bundle(active.version))
        last = active.version
    assert kills >= 1
    assert last > 2
    print("versions after each kill:", versions)


# --------------------------------------------------------------------------- store failures


def test_failure_inside_the_transaction_rolls_back(gateway: Gateway) -> None:
    """Any error after the rows are written (here: an injected one) leaves the old policy."""

    def explode(point: str) -> None:
        if point == "written":
            raise OSError("disk vanished")

    flaky = PolicyStore(gateway.db, fault_hook=explode)
    before = snapshot(gateway.db)
    with pytest.raises(OSError, match="disk vanished"):
        flaky.accept(
            gateway.centre.sign(3),
            trusted_keys=trusted_key_set([gateway.centre.key.public_key()]),
            gateway_id=GATEWAY,
            district=DISTRICT,
            wall_clock_now=T0 + DAY,
        )
    flaky.close()
    assert snapshot(gateway.db) == before
    gateway.accept(gateway.centre.sign(3))  # and the store still works


def test_tampered_store_is_detected(gateway: Gateway) -> None:
    with sqlite3.connect(gateway.db) as conn:
        conn.execute("UPDATE policy_active SET payload = ? WHERE kind = 'policy'", (b"evil",))
    with pytest.raises(PolicyError) as err:
        gateway.store.active()
    assert err.value.reason == "store_corrupt"


def test_unusable_database_path_is_a_policy_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as err:
        PolicyStore(tmp_path / "missing-dir" / "gw.sqlite")
    assert err.value.reason == "store_unavailable"
    assert "missing-dir" in err.value.detail


def test_bad_wall_clock_is_refused(gateway: Gateway) -> None:
    _refused(gateway, gateway.centre.sign(3), "bad_clock", now=float("nan"))
