"""Issue 12: the twin learns from the field. Gateways (the real Engine and Store, with the
agent's history calls) live 60 days of a KNOWN scenario driven by a seeded generator; then
``twin calibrate`` reads their SQLite stores and every known parameter must lie inside its
fitted interval (family-wise: Bonferroni over all the checks), with intervals that are not
absurdly wide."""

from __future__ import annotations

import heapq
import shutil
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from typer.testing import CliRunner

from edge_agent.engine import Engine, NotifyResponder, Site
from edge_agent.engine.site import SiteLamp, SiteResponder
from edge_agent.models import Event
from edge_agent.store.db import Store
from twin.calibrate import HOURS_PER_YEAR, calibrate
from twin.calibrate.write import write_scenario
from twin.cli import app
from twin.scenario import LoadedScenario, chain_ack_timeout_minutes, load_scenario

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"

DAYS = 60
GATEWAYS = 3
START = 1_748_707_200.0  # 2025-06-01T00:00Z
SOS_HOURLY = [1, 1, 1, 1, 1, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 2, 2, 1, 1]
TRAFFIC_SCALE = 0.2  # the scenario defaults' shape, a fifth of their level (keeps the test fast)
TOWN = (0.6, 0.3, 0.2, 0.2, 0.2, 0.5, 1.5, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2, 3, 4, 4, 3.5, 2.5, 1.5, 1.0)
VILLAGE = (0.1, 0.05, 0.05, 0.05, 0.1, 0.3, 0.8, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1.2, 1.0, 0.6, 0.3, 0.2, 0.1)

KNOWN = f"""
[scenario]
name = "known"
start = "2025-06-01"
days = {DAYS}

[site]
latitude = 28.77
longitude = 105.37
timezone = "Asia/Shanghai"

[policy]
file = "policies/naxi-standard.toml"

[district]
town_lamps = 60
villages = 3
lamps_per_village = 20
lamps_per_gateway = 20

[lamps]
town_traffic = {[round(v * TRAFFIC_SCALE, 4) for v in TOWN]}
village_traffic = {[round(v * TRAFFIC_SCALE, 4) for v in VILLAGE]}

[failures]
driver_mtbf_years = 0.25
repair_minutes = 360

[residents]
village = 60

[incidents.sos]
per_resident_year = 20
hourly = {SOS_HOURLY}

[incidents.fall]
per_resident_year = 12

[[responders]]
role = "village_doctor"
per_village = 1

[dispatch]
ack_probability = 0.85
ack_delay_minutes = 0.6

[gateways]
uplink_mtbf_hours = 48
uplink_outage_minutes = 45
"""

ROLES = ("village_doctor", "township_doctor", "district_centre", "grid_worker", "repair_crew")


def _local_hour(ts: float, tz: ZoneInfo) -> int:
    import datetime as dt

    return dt.datetime.fromtimestamp(ts, tz).hour


def _poisson_times(rng: np.random.Generator, rate_per_hour_by_local_hour: list[float], tz: ZoneInfo) -> list[float]:
    """Arrival times over the 60 days of a Poisson process with a rate by local hour."""
    out: list[float] = []
    for h in range(DAYS * 24):
        t0 = START + h * 3600.0
        rate = rate_per_hour_by_local_hour[_local_hour(t0, tz)]
        out.extend((t0 + rng.random(int(rng.poisson(rate))) * 3600.0).tolist())
    return out


def live_gateway(known: LoadedScenario, index: int, path: Path) -> None:
    """One gateway's 60 days: the events a field would send, through the real Engine and
    Store, with the agent's history calls where the agent makes them (intake, uplink watch)."""
    spec = known.spec
    tz = ZoneInfo(spec.site.timezone)
    rng = np.random.default_rng(1000 + index)
    gw = f"gw{index}"
    town = [SiteLamp(f"{gw}-t{j}", "town", f"{gw}-square") for j in range(20)]
    village = [SiteLamp(f"{gw}-v{j}", "village", f"{gw}-lane") for j in range(20)]
    wearables = [f"{gw}-w{j}" for j in range(spec.residents["village"] // GATEWAYS)]
    site = Site(
        gw,
        spec.site.latitude,
        spec.site.longitude,
        tz,
        lamps=tuple(town + village),
        responders=tuple(SiteResponder(f"{gw}-{role}", role) for role in ROLES),
    )
    store = Store(path)
    devices = [(lamp.id, "lamp", lamp.group, lamp.zone) for lamp in town + village]
    devices += [(f"{gw}-cam-square", "camera", None, f"{gw}-square"), (f"{gw}-cam-lane", "camera", None, f"{gw}-lane")]
    devices += [(w, "wearable", None, None) for w in wearables]
    store.history.install(devices, START)
    engine = Engine(known.policy, site, store)
    with store.transaction():
        engine.start(START)

    queue: list[tuple[float, int, str, tuple[str, ...]]] = []
    seq = iter(range(10**9))

    def push(t: float, what: str, *args: str) -> None:
        if t < START + DAYS * 86400:
            heapq.heappush(queue, (t, next(seq), what, args))

    per_hour = [spec.incidents[name].per_resident_year * len(wearables) / (365 * 24) for name in ("sos", "fall")]
    weights = np.array(SOS_HOURLY, dtype=float) / np.mean(SOS_HOURLY)
    for t in _poisson_times(rng, [per_hour[0] * w for w in weights], tz):
        push(t, "wearable", str(rng.choice(wearables)), "sos")
    for t in _poisson_times(rng, [per_hour[1]] * 24, tz):
        push(t, "wearable", str(rng.choice(wearables)), "fall")
    for lamps, rates in ((town, spec.lamps.town_traffic), (village, spec.lamps.village_traffic)):
        for t in _poisson_times(rng, [r * len(lamps) for r in rates], tz):
            push(t, "camera", lamps[0].zone or "", "person")
    mtbf_h = spec.failures.driver_mtbf_years * HOURS_PER_YEAR
    for lamp in town + village:
        t = START + rng.exponential(mtbf_h) * 3600
        push(t, "fault", lamp.id, lamp.group)
    t = START
    while t < START + DAYS * 86400:
        t += rng.exponential(spec.gateways.uplink_mtbf_hours) * 3600
        down = rng.exponential(spec.gateways.uplink_outage_minutes) * 60
        push(t, "link", "0")
        push(t + down, "link", "1")
        t += down

    def acks(effects: list[object], now: float) -> None:
        """A notified responder acknowledges with the known probability and delay, unless the
        delay runs past the chain's ack timeout (then the engine escalates first)."""
        for effect in effects:
            if isinstance(effect, NotifyResponder):
                chain = str(effect.alert.chain)
                delay = rng.exponential(spec.dispatch.ack_delay_minutes)
                if rng.random() < spec.dispatch.ack_probability and delay < chain_ack_timeout_minutes(
                    known.policy, chain
                ):
                    push(now + delay * 60, "ack", effect.alert.alert_id, effect.responder)

    while queue:
        due = engine.next_due()
        if due is not None and due <= queue[0][0]:  # the engine's timers and the field, in time order
            with store.transaction():
                acks(engine.fire_due(due), due)
            continue
        now, _, what, args = heapq.heappop(queue)
        with store.transaction():
            if what == "ack":
                engine.acknowledge(args[0], args[1], now)
            elif what == "link":
                store.history.record_link("north", args[0] == "1", now)
            elif what in ("wearable", "camera"):
                kind, name = what, args[1]
                zone = args[0] if kind == "camera" else None
                device = args[0] if kind == "wearable" else f"{gw}-cam-{args[0].rsplit('-', 1)[1]}"
                event = Event(device, kind, name, now, zone, None, {})
                store.history.record(event)  # as Intake.handle_event does, same transaction
                acks(engine.handle(event), now)
            else:  # a lamp's state report with its fault bits set, later cleared by the repair
                lamp, group = args
                broken = what == "fault"
                state = Event(lamp, "lamp", "state", now, None, group, {"faults": 4 if broken else 0})
                store.history.record(state)
                if broken:
                    acks(engine.handle(Event(lamp, "lamp", "fault", now, None, group, {"faults": 4})), now)
                    push(now + rng.exponential(spec.failures.repair_minutes) * 60, "repair", lamp, group)
                else:
                    push(now + rng.exponential(mtbf_h) * 3600, "fault", lamp, group)
    store.close()


@pytest.fixture(scope="module")
def field(tmp_path_factory: pytest.TempPathFactory) -> tuple[LoadedScenario, list[Path], Path]:
    root = tmp_path_factory.mktemp("field")
    shutil.copytree(SCENARIOS / "policies", root / "policies")
    (root / "known.toml").write_text(KNOWN)
    known = load_scenario(root / "known.toml")
    started = time.perf_counter()
    stores = []
    for i in range(GATEWAYS):
        stores.append(root / f"gw{i}.sqlite3")
        live_gateway(known, i, stores[-1])
    print(f"{GATEWAYS} gateways x {DAYS} days lived in {time.perf_counter() - started:.1f} s")
    return known, stores, root


def test_calibration_recovers_the_known_scenario(field: tuple[LoadedScenario, list[Path], Path]) -> None:
    known, stores, root = field
    spec = known.spec
    until = START + DAYS * 86400
    truth = {
        "incidents.sos.per_resident_year": spec.incidents["sos"].per_resident_year,
        "incidents.fall.per_resident_year": spec.incidents["fall"].per_resident_year,
        "dispatch.ack_probability": spec.dispatch.ack_probability,
        "dispatch.ack_delay_minutes": spec.dispatch.ack_delay_minutes,
        "failures.driver_mtbf_years": spec.failures.driver_mtbf_years,
        "failures.repair_minutes": spec.failures.repair_minutes,
        "gateways.uplink_mtbf_hours": spec.gateways.uplink_mtbf_hours,
        "gateways.uplink_outage_minutes": spec.gateways.uplink_outage_minutes,
    }
    per_resident_day = spec.incidents["sos"].per_resident_year / 365
    weights = np.array(SOS_HOURLY, dtype=float) / sum(SOS_HOURLY)
    hourly_truth = {
        "incidents.sos.hourly": (per_resident_day * weights).tolist(),  # per resident-day in each hour
        "lamps.town_traffic": list(spec.lamps.town_traffic),
        "lamps.village_traffic": list(spec.lamps.village_traffic),
    }
    checks = len(truth) + len(hourly_truth)  # each hourly family is simultaneous already
    level = 1 - 0.05 / checks  # family-wise 95% over everything checked
    started = time.perf_counter()
    cal = calibrate(stores, known, until=until, level=level)
    print(f"calibrated in {time.perf_counter() - started:.1f} s")
    for key, value in truth.items():
        e = cal.estimates[key]
        print(f"{key}: true {value:g}, fitted {e.value:.4g} [{e.lo:.4g}, {e.hi:.4g}] n={e.n}")
        assert e.contains(value), (key, value, e)
        assert e.hi / e.lo < 2.0, (key, e)  # not absurdly wide
    for key, values in hourly_truth.items():
        rates = cal.hourly[key]
        for hour, (value, e) in enumerate(zip(values, rates, strict=True)):
            assert e.contains(value), (key, hour, value, e)
        assert all(e.hi < 5 * max(values) for e in rates), key
    # motion: the overall level too (sum over hours), narrow
    traffic = cal.hourly["lamps.town_traffic"]
    assert sum(e.value for e in traffic) == pytest.approx(sum(spec.lamps.town_traffic), rel=0.05)

    # the fitted scenario loads with the twin's own loader and carries the fitted values
    fitted, sidecar = write_scenario(cal, known, root / "out" / "fitted.toml")
    assert fitted.spec.dispatch.ack_delay_minutes == pytest.approx(cal.estimates["dispatch.ack_delay_minutes"].value)
    assert fitted.spec.failures.wearout_scale_years >= 1000
    assert fitted.spec.incidents["sos"].hourly is not None
    assert sidecar.is_file()
    text = (root / "out" / "fitted.toml").read_text()
    assert "CI [" in text


def test_cli_calibrate(field: tuple[LoadedScenario, list[Path], Path]) -> None:
    known, stores, root = field
    out = root / "cli" / "scenario.toml"
    result = CliRunner().invoke(
        app, ["calibrate", *map(str, stores), "--base", known.path, "--out", str(out), "--level", "0.9"]
    )
    assert result.exit_code == 0, result.output
    assert load_scenario(out).spec.gateways.uplink_outage_minutes > 0
    missing = CliRunner().invoke(
        app, ["calibrate", str(root / "nope.sqlite3"), "--base", known.path, "--out", str(out)]
    )
    assert missing.exit_code == 2
