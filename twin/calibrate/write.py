"""A calibration written as a scenario file (TOML, with the intervals as comments) and a
JSON sidecar holding every estimate; the file loads with ``twin.scenario.load_scenario``.

Owns: applying the fitted values to the base scenario and a small TOML writer for the
scenario's shapes (tables, nested tables, arrays of tables, scalar and number arrays).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from twin.calibrate import WEAROUT_OFF_YEARS, Calibration
from twin.calibrate.stats import Estimate
from twin.scenario import LoadedScenario, load_scenario

SCENARIO_KEYS = (
    "dispatch.ack_probability",
    "dispatch.ack_delay_minutes",
    "failures.driver_mtbf_years",
    "failures.repair_minutes",
    "gateways.uplink_mtbf_hours",
    "gateways.uplink_outage_minutes",
)


def _ci(e: Estimate) -> str:
    return f"{e.level:.0%} CI [{e.lo:.4g}, {e.hi:.4g}], n={e.n}, {e.method}"


def fitted_document(cal: Calibration, base: LoadedScenario, out: Path) -> tuple[dict[str, Any], dict[str, str]]:
    doc: dict[str, Any] = msgspec.to_builtins(base.spec)
    comments: dict[str, str] = {}
    here = out.resolve().parent
    doc["policy"]["file"] = os.path.relpath(Path(base.policy_path).resolve(), here)
    if doc["district"].get("lamps_file"):
        lamps = (Path(base.path).parent / doc["district"]["lamps_file"]).resolve()
        doc["district"]["lamps_file"] = os.path.relpath(lamps, here)
    doc["scenario"]["name"] = f"{base.spec.scenario.name}-calibrated"
    doc["scenario"]["description"] = (
        f"{base.spec.scenario.name} fitted to {len(cal.gateways)} gateway store(s), {cal.days:.1f} gateway-days"
    )

    def put(path: str, value: float, note: str) -> None:
        *tables, key = path.split(".")
        node = doc
        for t in tables:
            node = node.setdefault(t, {})
        node[key] = round(value, 6)
        comments[path] = note

    for path in SCENARIO_KEYS:
        e = cal.estimates.get(path)
        if e is not None and math.isfinite(e.value) and e.value > 0:
            put(path, min(e.value, 1.0) if path.endswith("probability") else e.value, _ci(e))
    if "failures.driver_mtbf_years" in comments:
        put("failures.wearout_scale_years", WEAROUT_OFF_YEARS, "wear-out off: not identifiable from the history")
    for path, e in cal.estimates.items():
        if path.startswith("incidents.") and path.split(".")[1] in doc.get("incidents", {}):
            incident = doc["incidents"][path.split(".")[1]]
            incident["per_day" if path.endswith("per_resident_year") else "per_resident_year"] = 0.0
            put(path, e.value, _ci(e))
    _channels_and_answers(cal, base, doc, put)
    for path, rates in cal.hourly.items():
        parts = path.split(".")
        if parts[0] == "incidents" and parts[1] not in doc.get("incidents", {}):
            continue
        total = sum(r.value for r in rates)
        if total <= 0:
            continue
        values = [r.value for r in rates] if parts[0] == "lamps" else [24 * r.value / total for r in rates]
        *tables, key = parts
        node = doc
        for t in tables:
            node = node[t]
        node[key] = [round(v, 4) for v in values]
        comments[path] = f"per hour, simultaneous {cal.level:.0%} CIs in the sidecar; {cal.notes.get(path, '')}"
    return doc, comments


def _channels_and_answers(
    cal: Calibration, base: LoadedScenario, doc: dict[str, Any], put: Callable[[str, float, str], None]
) -> None:
    """The fitted ``[channels.<name>]`` and ``[dispatch.answer.<role>]`` (``twin.calibrate.channels``):
    a lognormal delay replaces the base's delay form; roles in no chain of the policy and channels
    that would leave a chain's channel undeclared are left out, with a note."""
    chains = base.policy.chains
    roles = {role for chain in chains.values() for role in chain.roles}
    fitted = {path.rsplit(".", 1)[0] for path in cal.estimates if path.startswith(("channels.", "dispatch.answer."))}
    declared = set(doc.get("channels") or {}) | {p.split(".")[1] for p in fitted if p.startswith("channels.")}
    missing = sorted({c for chain in chains.values() for c in chain.channels} - declared)
    for table in sorted(fitted):
        if table.startswith("channels.") and missing:
            cal.notes[table] = f"not written: the ledger has no rows for {missing}, which the policy's chains use"
            continue
        if table.startswith("dispatch.answer.") and table.split(".")[2] not in roles:
            cal.notes[table] = f"not written: the role is in no chain of the policy ({sorted(roles)})"
            continue
        est = {key: cal.estimates.get(f"{table}.{key}") for key in ("median_seconds", "p90_seconds")}
        delays = all(e is not None and math.isfinite(e.value) and e.value > 0 for e in est.values())
        if table.startswith("channels.") and not delays and table.split(".")[1] not in (doc.get("channels") or {}):
            cal.notes[table] = "not written: no delivery delay fitted, and the base scenario does not declare it"
            continue
        if delays:
            node = doc
            for t in table.split("."):
                node = node.setdefault(t, {})
            node.pop("mean_seconds", None)
            for key, e in est.items():
                assert e is not None
                put(f"{table}.{key}", e.value, _ci(e))
            node["p90_seconds"] = max(node["p90_seconds"], node["median_seconds"])  # rounding
        for key in ("failure", "probability"):
            e = cal.estimates.get(f"{table}.{key}")
            if e is not None and math.isfinite(e.value):
                put(f"{table}.{key}", min(1.0, max(0.0, e.value)), _ci(e))


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(float(v)) if isinstance(v, float) else str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise TypeError(type(v))


def to_toml(doc: dict[str, Any], comments: dict[str, str], header: str) -> str:
    lines = [f"# {line}" for line in header.splitlines()]

    def table(name: str, body: dict[str, Any], array: bool = False) -> None:
        lines.append("")
        lines.append(f"[[{name}]]" if array else f"[{name}]")
        nested = []
        for key, v in body.items():
            if v is None:
                continue
            if isinstance(v, dict):
                nested.append((key, v))
                continue
            note = comments.get(f"{name}.{key}")
            lines.append(f"{key} = {_value(v)}" + (f"  # {note}" if note else ""))
        for key, v in nested:
            table(f"{name}.{key}", v)

    for name, body in doc.items():
        if isinstance(body, dict):
            table(name, body)
        elif isinstance(body, list):
            for item in body:
                table(name, item, array=True)
    return "\n".join(lines) + "\n"


def write_scenario(cal: Calibration, base: LoadedScenario, out: Path) -> tuple[LoadedScenario, Path]:
    """Write ``out`` (the fitted scenario) and ``out.fit.json``; return it loaded back and the sidecar."""
    doc, comments = fitted_document(cal, base, out)
    header = (
        f"Calibrated by `twin calibrate` from {len(cal.gateways)} gateway store(s), {cal.days:.1f} gateway-days.\n"
        f"Base scenario: {base.path}. Fitted values carry their {cal.level:.0%} interval in a comment;\n"
        f"every estimate (and the per-hour intervals) is in {out.name}.fit.json."
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(to_toml(doc, comments, header))
    sidecar = out.with_name(out.name + ".fit.json")
    sidecar.write_text(json.dumps(cal.sidecar(), indent=1, default=float))
    return load_scenario(out), sidecar
