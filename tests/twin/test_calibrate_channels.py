"""``twin calibrate`` fits the channels and the answers from the gateways' notification ledger:
synthetic stores drawn from KNOWN delivery and answer distributions (numpy, fixed seed), then
every fitted median, p90, failure probability and answer share must lie near its generating
value (and inside its interval); a store from a gateway without the ledger still calibrates.

The stores are real SQLite files: the gateway's real ``Store`` (its history tables), plus the
notification ledger created with the DDL the gateway writes (edge_agent/store/notifications.py),
filled directly: what a gateway would have recorded, without living through its engine.
"""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from edge_agent.store.db import Store
from twin.calibrate import calibrate
from twin.calibrate.write import write_scenario
from twin.scenario import load_scenario
from twin.sim.reach import reach_from_scenario

START = 1_748_707_200.0  # 2025-06-01T00:00Z
Z90 = 1.2815515655446004
ALERTS = 4000  # per store
# channel: (median s, p90 s, failure), and when it goes after the step starts (the naxi policy's medical chain)
CHANNELS = {"app": (0.3, 1.0, 0.05), "sms": (5.0, 30.0, 0.02), "push": (2.0, 8.0, 0.04), "ring": (12.0, 20.0, 0.1)}
AFTER = {"ring": 45.0}
# role: (answer median s, p90 s, share of reached notifications acknowledged)
ANSWERS = {"village_doctor": (20.0, 45.0, 0.9), "township_doctor": (30.0, 70.0, 0.8)}


def lognormal(rng: np.random.Generator, median: float, p90: float) -> float:
    return float(rng.lognormal(math.log(median), math.log(p90 / median) / Z90))


def ledger_store(path: Path, seed: int) -> float:
    """A gateway store with ``ALERTS`` medical alerts: each to a doctor of one role, then (not
    acknowledged) to one of the other; returns the end of the observation."""
    store = Store(path)  # the gateway's own schema: its notification ledger included
    store.history.install([], START)
    store.close()
    rng = np.random.default_rng(seed)
    db = sqlite3.connect(path)
    rows: list[tuple[object, ...]] = []
    acks: list[tuple[object, ...]] = []

    def notify(alert: str, n: int, role: str, queued: float) -> float | None:
        """One notification by every channel; its acknowledgement time, if any."""
        responder = f"{role}-{n}"
        outcome = []
        for channel, (median, p90, failure) in CHANNELS.items():
            due = queued + AFTER.get(channel, 0.0)
            lost = rng.random() < failure
            at = due + lognormal(rng, median, p90)
            outcome.append((channel, due, lost, at))
        arrivals = [at for _, _, lost, at in outcome if not lost]
        median, p90, share = ANSWERS[role]
        ack = min(arrivals) + lognormal(rng, median, p90) if arrivals and rng.random() < share else None
        for channel, due, lost, at in outcome:
            if ack is not None and due > ack:  # answered before this delayed channel went
                rows.append(
                    (alert, n, n - 1, responder, role, channel, "x", "cancelled", due, queued, None, None, None)
                )
            elif lost:
                rows.append((alert, n, n - 1, responder, role, channel, "x", "failed", due, queued, due, None, at))
            elif channel == "app":  # the broker took it: no delivery report beyond that
                rows.append((alert, n, n - 1, responder, role, channel, "x", "handed", due, queued, at, None, None))
            else:
                handed = due + 0.01
                rows.append(
                    (alert, n, n - 1, responder, role, channel, "x", "delivered", due, queued, handed, at, None)
                )
        if ack is not None:
            acks.append((alert, ack, "acknowledged", n - 1, responder, "sos", "medical", "w1", 1, queued))
        return ack

    t = START
    for k in range(ALERTS):
        t += 600.0
        first, second = ("village_doctor", "township_doctor")[:: 1 if k % 2 else -1]
        if notify(f"a{k}", 1, first, t) is None:
            notify(f"a{k}", 2, second, t + 120.0)
    # still going at the end: neither delivered nor failed (left out of every fit)
    end = t + 3600.0
    rows.append(("late", 1, 0, "village_doctor-1", "village_doctor", "sms", "x", "queued", end, end, None, None, None))
    db.executemany(
        "INSERT INTO notifications (alert_id, n, step, responder, role, channel, target, state, due, queued,"
        " handed, delivered, failed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    db.executemany(
        "INSERT INTO alert_log (alert_id, ts, status, step, responder, rule, chain, device, priority, created)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        acks,
    )
    db.commit()
    db.close()
    return end + 60.0


def test_calibrate_recovers_the_channels_and_the_answers(tiny_scenario: Path, tmp_path: Path) -> None:
    stores = [tmp_path / "gw0.sqlite3", tmp_path / "gw1.sqlite3"]
    until = max(ledger_store(path, seed) for seed, path in enumerate(stores, start=11))
    base = load_scenario(tiny_scenario)
    checks = 3 * (len(CHANNELS) + len(ANSWERS))
    cal = calibrate(stores, base, until=until, level=1 - 0.05 / checks)  # family-wise 95%
    truth: dict[str, float] = {}
    for name, (median, p90, failure) in CHANNELS.items():
        truth |= {f"channels.{name}.median_seconds": median, f"channels.{name}.p90_seconds": p90}
        truth[f"channels.{name}.failure"] = failure
    for role, (median, p90, share) in ANSWERS.items():
        path = f"dispatch.answer.{role}"
        truth |= {f"{path}.median_seconds": median, f"{path}.p90_seconds": p90, f"{path}.probability": share}
    for key, value in truth.items():
        e = cal.estimates[key]
        print(f"{key}: true {value:g}, fitted {e.value:.4g} [{e.lo:.4g}, {e.hi:.4g}] n={e.n}")
        assert e.contains(value), (key, value, e)
        if key.endswith("_seconds"):
            assert e.value == pytest.approx(value, rel=0.08), key
        else:
            assert e.value == pytest.approx(value, abs=0.02), key
    assert cal.estimates["channels.ring.failure"].n < 2 * ALERTS  # the rings cancelled by an answer left out

    fitted, sidecar = write_scenario(cal, base, tmp_path / "out" / "fitted.toml")
    spec = fitted.spec
    assert spec.channels["ring"].median_seconds == pytest.approx(cal.estimates["channels.ring.median_seconds"].value)
    assert spec.channels["app"].failure == pytest.approx(cal.estimates["channels.app.failure"].value, abs=1e-6)
    answer = spec.dispatch.answer["township_doctor"]
    assert answer.p90_seconds == pytest.approx(cal.estimates["dispatch.answer.township_doctor.p90_seconds"].value)
    assert answer.probability == pytest.approx(cal.estimates["dispatch.answer.township_doctor.probability"].value)
    assert {c.name for c in reach_from_scenario(spec).tier("village_doctor").channels} == set(CHANNELS)
    assert "channels.ring.failure" in sidecar.read_text()
    assert "clopper-pearson" in (tmp_path / "out" / "fitted.toml").read_text()


def test_a_store_without_the_ledger_still_calibrates_with_a_note(tiny_scenario: Path, tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    store = Store(path)
    store.history.install([], START)
    store.close()
    with sqlite3.connect(path) as db:  # a gateway from before the ledger
        db.execute("DROP TABLE notifications")
    base = load_scenario(tiny_scenario)
    cal = calibrate([path], base, until=START + 86400.0)
    assert not any(key.startswith(("channels.", "dispatch.answer.")) for key in cal.estimates)
    assert "no notification ledger" in cal.notes["channels"] and str(path) in cal.notes["channels"]
    fitted, _ = write_scenario(cal, base, tmp_path / "out" / "fitted.toml")
    assert fitted.spec.channels == {}
