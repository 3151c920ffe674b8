"""The rollout driver: moves every active rollout on, one wave at a time, with its state only in the DB.

Owns: creating a rollout (``create_rollout``: the bundle in ``policy_versions``, the rollout, its
targets with their wave), one pass over the active rollouts (``tick``), the loop the service runs
(``drive_rollouts``), an operator's abort (``abort_rollout``) and the read model the CLI and the
console show (``rollout_status``).

Each pass, for each rollout in state running / waiting_window:
* the wave in progress (``rollouts.wave``) is started if it still has QUEUED targets: only inside
  the plan's window (else the rollout waits, state waiting_window); the signed bundle is published
  RETAINED, QoS 1, to ``district/v1/<gw>/policy`` and then the target is marked IN_PROGRESS with
  ``started``. After a restart, IN_PROGRESS targets are not published again; a target published
  but not yet marked is published once more (a retained publish of the same bytes is idempotent).
* an IN_PROGRESS target is REJECTED when ``policy_acks`` holds a rejected ack stamped at or after
  its ``started`` (a gateway's rejected ack carries its ACTIVE version, not the refused one, so
  the time is what ties it to this bundle: gateway clocks are assumed synchronised to a second),
  SUCCEEDED when it holds an accepted ack AND the gateway's retained ``rollout`` summary (the
  ``gateways`` row) says ``policy_version == version`` and ``lamps_on_version == lamps``, and
  TIMED_OUT once ``now - started >= timeout`` (counted from the stored ``started``).
* when every target of the wave finished, the abort rule is evaluated over every finished target
  so far; if it fires the rollout is ``aborted`` with the reason, its QUEUED targets are CANCELED
  and the bundle is not published again. Else the next wave is started; after the last one the
  rollout ``succeeded`` when every target SUCCEEDED, else it is ``incomplete`` (the reason counts
  the rest: a rollout whose gateways all timed out under a rule that never fired is no success).
* acks are matched on the centre's clock (``policy_acks.received``, when the ingest took the ack,
  against the target's ``started``), never on the gateway's ``ts``: a gateway with a wrong clock
  is still seen to reject or accept.

Known limit: SUCCEEDED trusts the ``gateways`` row, where the ingest also sets ``policy_version``
from an accepted ack; until the gateway's next ``rollout`` summary arrives, ``lamps_on_version``
still counts the lamps on the OLD version. A pass that falls between the two can mark a gateway
SUCCEEDED before its lamps confirmed. The driver narrows that window: it believes the summary only
once the accepted ack is ``SETTLE_S`` (1 s) old (a gateway publishes its new summary right after
the ack, so a summary still stale by then is unlikely, not impossible). The fix belongs to the
ingest: set policy_version from the summary only, or keep the summary's version in its own column.

On abort nothing is rolled back (as AWS IoT Jobs cancels, it does not undo): gateways that
accepted the version keep it, and their retained ``policy`` message stays (clearing it would not
undo anything: a gateway never goes back to an older version). To go back, roll out the old
policy signed as a NEW, higher version. An operator's abort (``abort_rollout``) also marks the
IN_PROGRESS targets CANCELED (their bundle was already published: the detail says so).

Must not import: the service, the console, the CLI, MQTT (``publish`` is given).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from centre.config import TOPIC_ROOT, CentreConfig
from centre.db import Database, Tx
from centre.rollout import (
    ABORTED,
    ACTIVE,
    CANCELED,
    FINISHED,
    IN_PROGRESS,
    INCOMPLETE,
    QUEUED,
    REJECTED,
    ROLLOUT_SUCCEEDED,
    RUNNING,
    SUCCEEDED,
    TARGET_STATES,
    TIMED_OUT,
    WAITING_WINDOW,
    Plan,
    assign_waves,
    plan_from_json,
)
from edge_agent.clock import Clock
from edge_agent.errors import TransportError
from edge_agent.policy.bundle import parse_envelope

log = logging.getLogger(__name__)

Publish = Callable[..., Awaitable[None]]  # publish(topic, payload, *, retain=False)
POLL_SECONDS = 0.5
SETTLE_S = 1.0  # an accepted ack this old at least before its summary is believed (see "Known limit")


class RolloutError(ValueError):
    """A rollout that cannot be created or changed; the message says why."""


def policy_topic(gateway: str) -> str:
    return f"{TOPIC_ROOT}/{gateway}/policy"


def create_rollout(
    db: Database,
    envelope: bytes,
    gateways: Sequence[str],
    plan: Plan,
    now: float,
    *,
    name: str = "",
    district: str | None = None,
) -> str:
    """Store the bundle and a new rollout with its targets; its id. RolloutError on a bad bundle or clash,
    or a bundle that the targets would refuse as not theirs (another district, a gateway it does not name)."""
    try:
        bundle, _ = parse_envelope(envelope)
    except Exception as exc:  # PolicyError: the reason and where
        raise RolloutError(f"not a signed policy bundle: {exc}") from None
    if not gateways:
        raise RolloutError("no gateways to roll out to (none given and none known)")
    if district is not None and bundle.target.district != district:
        raise RolloutError(f"the bundle is for district {bundle.target.district!r}, this centre's is {district!r}")
    named = set(bundle.target.gateways)
    if "*" not in named and not set(gateways) <= named:
        missing = sorted(set(gateways) - named)
        raise RolloutError(f"the bundle does not name {len(missing)} of the gateways: {', '.join(missing[:5])}")
    waves = assign_waves(gateways, plan.canary, plan.waves)
    sha = hashlib.sha256(envelope).hexdigest()
    rollout_id = f"v{bundle.version}-{uuid.uuid4().hex[:8]}"
    with db.transaction() as tx:
        known = tx.query("SELECT sha256 FROM policy_versions WHERE version = ?", (bundle.version,))
        if known and known[0][0] != sha:
            raise RolloutError(
                f"version {bundle.version} is already known with other bytes (sha256 {known[0][0][:12]}…)"
            )
        running = tx.query("SELECT rollout_id FROM rollouts WHERE state IN (?, ?)", tuple(sorted(ACTIVE)))
        if running:
            raise RolloutError(f"rollout {running[0][0]} is still active; wait for it or `centre rollout abort` it")
        tx.execute(
            "INSERT INTO policy_versions (version, sha256, name, bundle, created) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (version) DO NOTHING",
            (bundle.version, sha, name or f"{bundle.kind} v{bundle.version}", base64.b64encode(envelope).decode(), now),
        )
        tx.execute(
            "INSERT INTO rollouts (rollout_id, version, state, plan, wave, reason, created, updated)"
            " VALUES (?, ?, ?, ?, 0, NULL, ?, ?)",
            (rollout_id, bundle.version, RUNNING, json.dumps(plan.to_json()), now, now),
        )
        tx.executemany(
            "INSERT INTO rollout_targets (rollout_id, gateway, wave, state) VALUES (?, ?, ?, ?)",
            [(rollout_id, gw, index, QUEUED) for index, wave in enumerate(waves) for gw in wave],
        )
    return rollout_id


def abort_rollout(db: Database, rollout_id: str, now: float, reason: str = "aborted by an operator") -> None:
    with db.transaction() as tx:
        rows = tx.query("SELECT state FROM rollouts WHERE rollout_id = ?", (rollout_id,))
        if not rows:
            raise RolloutError(f"no rollout {rollout_id!r}")
        if rows[0][0] not in ACTIVE:
            raise RolloutError(f"rollout {rollout_id} already ended ({rows[0][0]})")
        _abort(tx, rollout_id, now, reason)
        tx.execute(
            "UPDATE rollout_targets SET state = ?, finished = ?, detail = ? WHERE rollout_id = ? AND state = ?",
            (CANCELED, now, "canceled after the bundle was published: it may still apply it", rollout_id, IN_PROGRESS),
        )


def _abort(tx: Tx, rollout_id: str, now: float, reason: str) -> None:
    tx.execute(
        "UPDATE rollouts SET state = ?, reason = ?, updated = ? WHERE rollout_id = ?",
        (ABORTED, reason, now, rollout_id),
    )
    tx.execute(
        "UPDATE rollout_targets SET state = ?, finished = ?, detail = ? WHERE rollout_id = ? AND state = ?",
        (CANCELED, now, "never published: the rollout was aborted", rollout_id, QUEUED),
    )


@dataclass(frozen=True)
class Status:
    rollout_id: str
    version: int
    state: str
    wave: int
    waves: int
    reason: str | None
    counts: dict[str, int]
    targets: list[tuple[str, int, str, str | None]]  # gateway, wave, state, detail


def rollout_status(db: Database, rollout_id: str | None = None) -> Status | None:
    """One rollout (the newest when no id) with its per-state counts; None when there is none."""
    with db.transaction() as tx:
        if rollout_id is None:
            rows = tx.query(
                "SELECT rollout_id, version, state, wave, reason FROM rollouts"
                " ORDER BY created DESC, rollout_id LIMIT 1"
            )
        else:
            rows = tx.query(
                "SELECT rollout_id, version, state, wave, reason FROM rollouts WHERE rollout_id = ?", (rollout_id,)
            )
        if not rows:
            return None
        rid, version, state, wave, reason = rows[0]
        targets = tx.query(
            "SELECT gateway, wave, state, detail FROM rollout_targets WHERE rollout_id = ? ORDER BY wave, gateway",
            (rid,),
        )
    counts = Counter(str(t[2]) for t in targets)
    waves = 1 + max((int(t[1]) for t in targets), default=0)
    return Status(
        rid,
        int(version),
        str(state),
        int(wave),
        waves,
        reason,
        dict(counts),
        [(t[0], int(t[1]), t[2], t[3]) for t in targets],
    )


# ---------------------------------------------------------------- one pass


def _observe(tx: Tx, rollout_id: str, version: int, timeout: float, now: float) -> None:
    """IN_PROGRESS targets -> SUCCEEDED / REJECTED / TIMED_OUT from what the ingest stored."""
    rows = tx.query(
        "SELECT t.gateway, t.started, g.policy_version, g.lamps, g.lamps_on_version,"
        " (SELECT MAX(a.reason) FROM policy_acks a WHERE a.gateway = t.gateway AND a.status = 'rejected'"
        " AND COALESCE(a.received, a.ts) >= t.started),"
        " (SELECT MIN(COALESCE(a.received, a.ts)) FROM policy_acks a WHERE a.gateway = t.gateway AND a.version = ?"
        " AND a.status IN ('accepted', 'already_active'))"
        " FROM rollout_targets t LEFT JOIN gateways g ON g.gateway = t.gateway"
        " WHERE t.rollout_id = ? AND t.state = ?",
        (version, rollout_id, IN_PROGRESS),
    )
    for gateway, started, on_version, lamps, lamps_on, rejected, accepted in rows:
        if rejected is not None:
            state, detail = REJECTED, f"rejected: {rejected}"
        elif accepted is not None and now - float(accepted) >= SETTLE_S and on_version == version and lamps_on == lamps:
            state, detail = SUCCEEDED, f"{lamps_on}/{lamps} lamps on version {version}"
        elif now - float(started) >= timeout:
            what = "no ack" if accepted is None else f"ack accepted, {lamps_on or 0}/{lamps or 0} lamps confirmed"
            state, detail = TIMED_OUT, f"{what} after {timeout:g} s"
        else:
            continue
        tx.execute(
            "UPDATE rollout_targets SET state = ?, finished = ?, detail = ? WHERE rollout_id = ? AND gateway = ?",
            (state, now, detail, rollout_id, gateway),
        )


def _advance(tx: Tx, rollout_id: str, wave: int, plan: Plan, now: float) -> tuple[str, int, list[str], str | None]:
    """After observing: the rollout's (state, wave, gateways to publish now, bundle b64)."""
    targets = tx.query("SELECT gateway, wave, state FROM rollout_targets WHERE rollout_id = ?", (rollout_id,))
    last = max((int(t[1]) for t in targets), default=0)
    while True:
        in_wave = [t for t in targets if int(t[1]) == wave]
        started = any(t[2] == IN_PROGRESS for t in in_wave)
        queued = sorted(t[0] for t in in_wave if t[2] == QUEUED)
        if queued:  # a wave not started waits for the window; a wave partly published is completed
            if not started and plan.window is not None and not plan.window.contains(now):
                return WAITING_WINDOW, wave, [], None
            return RUNNING, wave, queued, None
        if started:
            return RUNNING, wave, [], None
        # the wave finished (or was empty): the abort rule, then the next wave
        counts = Counter(str(t[2]) for t in targets if t[2] in FINISHED)
        reason = plan.abort_if.fired(counts) if in_wave else None
        if reason is not None:
            return ABORTED, wave, [], f"after wave {wave}: {reason}"
        if wave >= last:
            missed = Counter(str(t[2]) for t in targets if t[2] != SUCCEEDED)
            if missed:
                lines = ", ".join(f"{state.lower()}={n}" for state, n in sorted(missed.items()))
                return INCOMPLETE, wave, [], f"every wave ran, but not every gateway took it: {lines}"
            return ROLLOUT_SUCCEEDED, wave, [], None
        wave += 1


async def tick(db: Database, publish: Publish, now: float) -> None:
    """One pass over every active rollout (see the module docstring)."""
    rollouts = await asyncio.to_thread(
        db.query,
        "SELECT rollout_id, version, plan, wave, state FROM rollouts WHERE state IN (?, ?)",
        tuple(sorted(ACTIVE)),
    )
    for rollout_id, version, plan_text, wave, state in rollouts:
        plan = plan_from_json(json.loads(plan_text))
        step = await asyncio.to_thread(_step, db, rollout_id, int(version), plan, int(wave), str(state), now)
        if step is None:
            continue
        to_publish, envelope = step
        # the whole wave at once (each publish waits for its PUBACK), then one commit for the wave
        results = await asyncio.gather(
            *(publish(policy_topic(gw), envelope, retain=True) for gw in to_publish), return_exceptions=True
        )
        done = [gw for gw, result in zip(to_publish, results, strict=True) if result is None]
        if done:
            await asyncio.to_thread(_mark_started, db, rollout_id, done, now)
            log.info("rollout %s: published version %s to %d gateways: %s", rollout_id, version, len(done), done)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise failures[0]  # the rest stay QUEUED: published on the next pass


def _step(
    db: Database, rollout_id: str, version: int, plan: Plan, wave: int, state: str, now: float
) -> tuple[list[str], bytes] | None:
    with db.transaction() as tx:
        _observe(tx, rollout_id, version, plan.timeout, now)
        new_state, new_wave, to_publish, reason = _advance(tx, rollout_id, wave, plan, now)
        if new_state == ABORTED:
            _abort(tx, rollout_id, now, reason or "aborted")
            log.warning("rollout %s aborted: %s", rollout_id, reason)
            return None
        if (new_state, new_wave) != (state, wave):
            tx.execute(
                "UPDATE rollouts SET state = ?, wave = ?, reason = COALESCE(?, reason), updated = ?"
                " WHERE rollout_id = ?",
                (new_state, new_wave, reason, now, rollout_id),
            )
            if new_state == INCOMPLETE:
                log.warning("rollout %s incomplete: %s", rollout_id, reason)
        if not to_publish:
            return None
        rows = tx.query("SELECT bundle FROM policy_versions WHERE version = ?", (version,))
    if not rows:
        with db.transaction() as tx:
            _abort(tx, rollout_id, now, f"the bundle of version {version} is missing from policy_versions")
        return None
    return to_publish, base64.b64decode(rows[0][0])


def _mark_started(db: Database, rollout_id: str, gateways: Sequence[str], now: float) -> None:
    """IN_PROGRESS from ``now`` (the pass's time, taken before the publishes: timeouts never start late)."""
    with db.transaction() as tx:
        tx.executemany(
            "UPDATE rollout_targets SET state = ?, started = ? WHERE rollout_id = ? AND gateway = ? AND state = ?",
            [(IN_PROGRESS, now, rollout_id, gw, QUEUED) for gw in gateways],
        )


async def drive_rollouts(
    config: CentreConfig, db: Database, publish: Publish, clock: Clock | Callable[[], float]
) -> None:
    """Run until cancelled: a pass every 0.5 s. A failing pass is logged and retried, never fatal.

    ``clock`` is an ``edge_agent.clock.Clock`` or a plain ``now()`` function (the service's time.time).
    """
    del config  # the plan (with its timeout) is stored with each rollout
    while True:
        now = clock() if callable(clock) else clock.now()
        try:
            await tick(db, publish, now)
        except asyncio.CancelledError:
            raise
        except TransportError as exc:  # the link is (re)connecting: the QUEUED targets are published next pass
            log.warning("rollout: cannot publish yet (%s); retrying", exc)
        except Exception:
            log.exception("rollout pass failed; retrying")
        if callable(clock):
            await asyncio.sleep(POLL_SECONDS)
        else:
            await clock.sleep_until(now + POLL_SECONDS)


def counts_line(counts: dict[str, Any]) -> str:
    """``queued=3  in_progress=2  succeeded=5`` (states with none left out)."""
    return "  ".join(f"{s.lower()}={counts.get(s, 0)}" for s in TARGET_STATES if counts.get(s, 0))
