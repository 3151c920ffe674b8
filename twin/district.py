"""The district as arrays: lamps, gateways, residents, responders (synthetic or from files).

Owns: turning a validated scenario into numpy arrays (positions in metres on a local plane
centred on the site), generated from a few parameters with a seeded generator, or lamps read
from CSV or GeoJSON; and the policy's programs as the arrays the kernels take, built from
``edge_agent.policy.programs.CompiledProgram`` fields (the same numbers the gateway uses).

Must not import: simpy, numba, twin.sim, twin.kernels.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_agent.errors import ConfigError, Problem
from edge_agent.policy.model import Policy
from edge_agent.policy.programs import compile_programs
from twin.scenario import AREAS, LoadedScenario

AREA_INDEX = {name: i for i, name in enumerate(AREAS)}
_M_PER_DEG_LAT = 110_540.0
_M_PER_DEG_LON = 111_320.0


@dataclass(frozen=True)
class ProgramArrays:
    """The policy's programs as arrays (one row per program), in ``names`` order."""

    names: tuple[str, ...]
    on_kind: np.ndarray
    on_value: np.ndarray
    off_kind: np.ndarray
    off_value: np.ndarray
    base_level: np.ndarray
    step_minutes: np.ndarray  # (P, S), padded; n_steps says how many are real
    step_levels: np.ndarray
    n_steps: np.ndarray
    boost_level: np.ndarray
    boost_minutes: np.ndarray


@dataclass(frozen=True)
class DistrictArrays:
    lamp_x: np.ndarray
    lamp_y: np.ndarray
    lamp_area: np.ndarray  # index into AREAS
    lamp_group: tuple[str, ...]
    lamp_program: np.ndarray  # index into ProgramArrays.names
    lamp_rated_w: np.ndarray
    lamp_standby_w: np.ndarray
    lamp_gateway: np.ndarray
    gateway_x: np.ndarray
    gateway_y: np.ndarray
    gateway_area: np.ndarray
    village_x: np.ndarray
    village_y: np.ndarray

    @property
    def n_lamps(self) -> int:
        return int(self.lamp_x.shape[0])


def program_arrays(policy: Policy) -> ProgramArrays:
    compiled = compile_programs(policy)
    names = tuple(sorted(compiled))
    programs = [compiled[n] for n in names]
    width = max(1, max(p.n_steps for p in programs))
    step_minutes = np.zeros((len(names), width))
    step_levels = np.zeros((len(names), width))
    for i, p in enumerate(programs):
        step_minutes[i, : p.n_steps] = p.step_minutes
        step_levels[i, : p.n_steps] = p.step_levels
    return ProgramArrays(
        names=names,
        on_kind=np.array([p.on_kind for p in programs], dtype=np.int64),
        on_value=np.array([p.on_value for p in programs], dtype=np.float64),
        off_kind=np.array([p.off_kind for p in programs], dtype=np.int64),
        off_value=np.array([p.off_value for p in programs], dtype=np.float64),
        base_level=np.array([p.base_level for p in programs], dtype=np.float64),
        step_minutes=step_minutes,
        step_levels=step_levels,
        n_steps=np.array([p.n_steps for p in programs], dtype=np.int64),
        boost_level=np.array([p.boost_level for p in programs], dtype=np.float64),
        boost_minutes=np.array([p.boost_minutes for p in programs], dtype=np.float64),
    )


def _disc(rng: np.random.Generator, n: int, radius: float) -> tuple[np.ndarray, np.ndarray]:
    r = radius * np.sqrt(rng.random(n))
    a = rng.random(n) * 2 * math.pi
    return r * np.cos(a), r * np.sin(a)


def village_centres(loaded: LoadedScenario) -> tuple[np.ndarray, np.ndarray]:
    d = loaded.spec.district
    rng = np.random.default_rng([loaded.spec.scenario.seed, 11])
    lo, hi = d.village_ring_m
    r = lo + (hi - lo) * rng.random(d.villages)
    a = (np.arange(d.villages) + 0.5 * rng.random(d.villages)) * 2 * math.pi / max(1, d.villages)
    return r * np.cos(a), r * np.sin(a)


def _read_lamps_file(path: Path, lat0: float, lon0: float) -> list[dict[str, object]]:
    """Rows with x, y, area, group, rated_w (optional), gateway (optional)."""
    source = str(path)
    rows: list[dict[str, object]] = []
    problems: list[Problem] = []
    scale_x = _M_PER_DEG_LON * math.cos(math.radians(lat0))
    if path.suffix.lower() in (".geojson", ".json"):
        try:
            doc = json.loads(path.read_text())
            features = doc["features"]
        except (ValueError, KeyError, TypeError):
            raise ConfigError([Problem(source, "", "expected a GeoJSON FeatureCollection of Points")]) from None
        for i, feature in enumerate(features):
            geometry = feature.get("geometry") or {}
            if geometry.get("type") != "Point":
                problems.append(Problem(source, f"features[{i}].geometry", "expected a Point"))
                continue
            lon, lat = geometry["coordinates"][:2]
            props = dict(feature.get("properties") or {})
            props["x"] = (float(lon) - lon0) * scale_x
            props["y"] = (float(lat) - lat0) * _M_PER_DEG_LAT
            rows.append(props)
    else:
        with path.open(newline="") as handle:
            for i, row in enumerate(csv.DictReader(handle)):
                item: dict[str, object] = dict(row)
                try:
                    if row.get("x_m") not in (None, ""):
                        item["x"], item["y"] = float(row["x_m"]), float(row["y_m"])
                    else:
                        item["x"] = (float(row["lon"]) - lon0) * scale_x
                        item["y"] = (float(row["lat"]) - lat0) * _M_PER_DEG_LAT
                except (KeyError, TypeError, ValueError):
                    problems.append(Problem(source, f"row {i + 2}", "expected x_m,y_m or lat,lon numbers"))
                    continue
                rows.append(item)
    for i, row in enumerate(rows):
        if row.get("area", "town") not in AREAS:
            problems.append(Problem(source, f"row {i + 2}.area", f"expected one of {AREAS}"))
    if problems:
        raise ConfigError(problems)
    return rows


def build_district(loaded: LoadedScenario, programs: ProgramArrays) -> DistrictArrays:
    """Lamps and gateways of the scenario; the same scenario seed gives the same district."""
    spec = loaded.spec
    d = spec.district
    rng = np.random.default_rng([spec.scenario.seed, 7])
    vx, vy = village_centres(loaded)
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    areas: list[np.ndarray] = []
    groups: list[str] = []
    rated: list[float] = []
    gateway_keys: list[str] = []
    if d.lamps_file is not None:
        rows = _read_lamps_file(Path(loaded.path).parent / d.lamps_file, spec.site.latitude, spec.site.longitude)
        for row in rows:
            area = str(row.get("area", "town"))
            xs.append(np.array([float(str(row["x"]))]))
            ys.append(np.array([float(str(row["y"]))]))
            areas.append(np.array([AREA_INDEX[area]]))
            groups.append(str(row.get("group") or area))
            default_w = spec.lamps.town_rated_w if area == "town" else spec.lamps.village_rated_w
            rated.append(float(str(row.get("rated_w") or default_w)))
            gateway_keys.append(str(row.get("gateway") or ""))
    else:
        tx, ty = _disc(rng, d.town_lamps, d.town_radius_m)
        order = np.argsort(np.arctan2(ty, tx) * 10_000 + np.hypot(tx, ty) / 1000)
        tx, ty = tx[order], ty[order]
        xs.append(tx)
        ys.append(ty)
        areas.append(np.zeros(d.town_lamps, dtype=np.int64))
        groups += ["town"] * d.town_lamps
        rated += [spec.lamps.town_rated_w] * d.town_lamps
        gateway_keys += [f"town-{i // d.lamps_per_gateway}" for i in range(d.town_lamps)]
        for v in range(d.villages):
            lx, ly = _disc(rng, d.lamps_per_village, d.village_radius_m)
            xs.append(lx + vx[v])
            ys.append(ly + vy[v])
            areas.append(np.ones(d.lamps_per_village, dtype=np.int64))
            groups += ["village"] * d.lamps_per_village
            rated += [spec.lamps.village_rated_w] * d.lamps_per_village
            gateway_keys += [f"village-{v}"] * d.lamps_per_village
    lamp_x = np.concatenate(xs) if xs else np.zeros(0)
    lamp_y = np.concatenate(ys) if ys else np.zeros(0)
    lamp_area = np.concatenate(areas).astype(np.int64) if areas else np.zeros(0, np.int64)
    # Programs by group, as the gateway resolves them (Policy.program_for_group).
    program_index = {name: i for i, name in enumerate(programs.names)}
    lamp_program = np.empty(len(groups), dtype=np.int64)
    problems: list[Problem] = []
    for i, group in enumerate(groups):
        name = loaded.policy.program_for_group(group)
        if name is None:
            problems.append(
                Problem(
                    loaded.policy_path, f"assign.{group}", "lamps of this group have no program; add it or a 'default'"
                )
            )
            break
        lamp_program[i] = program_index[name]
    if problems:
        raise ConfigError(problems)
    keys = sorted(set(gateway_keys))
    key_index = {k: i for i, k in enumerate(keys)}
    lamp_gateway = np.array([key_index[k] for k in gateway_keys], dtype=np.int64)
    gx = np.array([lamp_x[lamp_gateway == g].mean() for g in range(len(keys))])
    gy = np.array([lamp_y[lamp_gateway == g].mean() for g in range(len(keys))])
    garea = np.array(
        [int(np.round(lamp_area[lamp_gateway == g].mean())) for g in range(len(keys))],
        dtype=np.int64,
    )
    return DistrictArrays(
        lamp_x=lamp_x,
        lamp_y=lamp_y,
        lamp_area=lamp_area,
        lamp_group=tuple(groups),
        lamp_program=lamp_program,
        lamp_rated_w=np.array(rated, dtype=np.float64),
        lamp_standby_w=np.full(len(groups), spec.lamps.standby_w),
        lamp_gateway=lamp_gateway,
        gateway_x=gx,
        gateway_y=gy,
        gateway_area=garea,
        village_x=vx,
        village_y=vy,
    )
