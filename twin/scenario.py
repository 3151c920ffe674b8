"""Scenario files: the district a policy is tested against (TOML, validated once at load).

Owns: the scenario schema (frozen msgspec Structs), loading and cross-checking a scenario file
and its policy (every problem reported with file and key path), and the site's UTC offsets.
The district itself (lamps, responders, gateways) is built in ``twin.district``.

A scenario names its policy by a path relative to the scenario file; ``twin compare`` and
``twin validate`` swap that policy for another one.

Must not import: simpy, numba, twin.sim, twin.kernels, edge_agent.agent/engine/transports.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from edge_agent.errors import ConfigError, Problem
from edge_agent.policy.dispatch_state import parse_shift
from edge_agent.policy.model import Policy, convert_section, load_toml, parse_policy
from edge_agent.policy.units import parse_duration
from twin.scenario_channels import AnswerSpec, ChannelSpec, check_channels, check_keyed_tables

Positive = Annotated[float, msgspec.Meta(gt=0)]
NonNegative = Annotated[float, msgspec.Meta(ge=0)]
Probability = Annotated[float, msgspec.Meta(ge=0, le=1)]
Hourly = Annotated[list[NonNegative], msgspec.Meta(min_length=24, max_length=24)]
AREAS = ("town", "village")

# Arrivals (pedestrians + vehicles) per lamp per hour, local clock hour 0..23. Planner
# assumptions, not measurements: evening peak in town, a quiet village after 22:00.
_TOWN_TRAFFIC = [0.6, 0.3, 0.2, 0.2, 0.2, 0.5, 1.5, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2, 3, 4, 4, 3.5,
                 2.5, 1.5, 1.0]  # fmt: skip
_VILLAGE_TRAFFIC = [0.1, 0.05, 0.05, 0.05, 0.1, 0.3, 0.8, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1.2,
                    1.0, 0.6, 0.3, 0.2, 0.1]  # fmt: skip


class Meta(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    name: str
    description: str = ""
    seed: Annotated[int, msgspec.Meta(ge=0)] = 1
    start: str = "2025-01-01"  # local date of the first night
    days: Annotated[int, msgspec.Meta(ge=1, le=3660)] = 365
    replications: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 4


class Site(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    latitude: Annotated[float, msgspec.Meta(ge=-72, le=72)]  # NOAA's stated range (docs/DOMAIN.md#sun)
    longitude: Annotated[float, msgspec.Meta(ge=-180, le=180)]
    timezone: str = "UTC"


class PolicyRef(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    file: str  # relative to the scenario file


class District(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A synthetic district (seeded), or a lamp list from ``lamps_file`` (CSV or GeoJSON)."""

    town_lamps: Annotated[int, msgspec.Meta(ge=0)] = 0
    town_radius_m: Positive = 2500.0
    villages: Annotated[int, msgspec.Meta(ge=0)] = 0
    lamps_per_village: Annotated[int, msgspec.Meta(ge=0)] = 0
    village_radius_m: Positive = 400.0
    village_ring_m: Annotated[list[Positive], msgspec.Meta(min_length=2, max_length=2)] = msgspec.field(
        default_factory=lambda: [4000.0, 15000.0]
    )
    lamps_per_gateway: Annotated[int, msgspec.Meta(ge=1)] = 100  # town cabinets; 1 per village
    lamps_file: str | None = None  # relative to the scenario file


class Lamps(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    town_rated_w: Positive = 90.0  # docs/DOMAIN.md#lighting: 60-150 W common
    village_rated_w: Positive = 60.0
    standby_w: NonNegative = 1.5  # docs/DOMAIN.md#lighting: smart node 1-3 W (vendor)
    town_traffic: Hourly = msgspec.field(default_factory=lambda: list(_TOWN_TRAFFIC))
    village_traffic: Hourly = msgspec.field(default_factory=lambda: list(_VILLAGE_TRAFFIC))


class Failures(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Hazard = exponential electronics term x Weibull wear-out (docs/DOMAIN.md#failures). No authoritative
    Weibull parameters exist; defaults: driver MTBF 25 years (about 4 % a year), wear-out shape
    4 and scale 14 years (calendar time), lamps installed 0-8 years ago."""

    driver_mtbf_years: Positive = 25.0
    wearout_shape: Positive = 4.0
    wearout_scale_years: Positive = 14.0
    age_years: Annotated[list[NonNegative], msgspec.Meta(min_length=2, max_length=2)] = msgspec.field(
        default_factory=lambda: [0.0, 8.0]
    )
    repair_minutes: Positive = 45.0  # on site, once the crew is there
    detect_poll_minutes: Positive = 15.0  # gateway telemetry: a dark lamp is seen at next poll


class IncidentType(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Incidents of one type. ``per_resident_year`` (wearables) or ``per_day`` (district)."""

    per_resident_year: NonNegative = 0.0
    per_day: NonNegative = 0.0
    chain: str | None = None  # default: the chain the policy's rule for this event notifies
    service_minutes: Positive = 30.0  # on scene (exponential)
    hourly: Hourly | None = None  # relative weights by hour; default flat


class Responders(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A group of responders of one role: ``per_village`` (placed in villages), ``town``
    (in the town) and ``centre`` (at the district centre)."""

    role: str
    per_village: Annotated[int, msgspec.Meta(ge=0)] = 0
    town: Annotated[int, msgspec.Meta(ge=0)] = 0
    centre: Annotated[int, msgspec.Meta(ge=0)] = 0
    speed_kmh: Positive = 30.0
    shift: str = "00:00-24:00"
    local: bool = False  # reached over the village's local broker even when the uplink is down


class Dispatch(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    ack_probability: Probability = 0.9
    ack_delay_minutes: NonNegative = 0.5  # mean (exponential) of a responder's acknowledgement
    answer: dict[str, AnswerSpec] = {}  # per tier (role); twin.scenario_channels
    detour_factor: Annotated[float, msgspec.Meta(ge=1)] = 1.4
    warmup_days: NonNegative = 0.0  # incidents before this are simulated but not counted


class Gateways(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    uplink_mtbf_hours: Positive = 240.0
    uplink_outage_minutes: Positive = 30.0  # mean
    telemetry_minutes: Positive = 15.0  # each lamp reports this often
    wearable_heartbeat_minutes: Positive = 10.0


class Targets(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    town_minutes: Positive = 8.0  # NFPA 1710
    village_minutes: Positive = 14.0  # NFPA 1720 rural


class GateSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    name: str
    kpi: str
    op: Literal["<=", ">="]
    limit: float


class Scenario(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    scenario: Meta
    site: Site
    policy: PolicyRef
    district: District
    lamps: Lamps = Lamps()
    failures: Failures = Failures()
    residents: dict[str, Annotated[int, msgspec.Meta(ge=0)]] = {}  # area -> wearables
    incidents: dict[str, IncidentType] = {}
    responders: list[Responders] = []
    channels: dict[str, ChannelSpec] = {}  # by the gateway's channel name; twin.scenario_channels
    dispatch: Dispatch = Dispatch()
    gateways: Gateways = Gateways()
    targets: Targets = Targets()
    gates: list[GateSpec] = []


class LoadedScenario(msgspec.Struct, frozen=True, kw_only=True):
    """A validated scenario with its policy, paths and hashes: what a replication needs."""

    spec: Scenario
    path: str
    sha256: str
    policy: Policy
    policy_path: str
    policy_bytes: bytes

    @property
    def first_day(self) -> int:
        return (dt.date.fromisoformat(self.spec.scenario.start) - dt.date(1970, 1, 1)).days


INCIDENT_EVENTS = {"sos": "sos", "fall": "fall", "lamp_outage": "fault"}


def utc_offsets(timezone: str, first_day: int, n_days: int) -> list[float]:
    """The zone's UTC offset in minutes at local noon of each day (DST-aware)."""
    zone = ZoneInfo(timezone)
    out = []
    for d in range(n_days):
        day = dt.date(1970, 1, 1) + dt.timedelta(days=first_day + d)
        noon = dt.datetime(day.year, day.month, day.day, 12, tzinfo=zone)
        offset = noon.utcoffset()
        out.append(offset.total_seconds() / 60.0 if offset is not None else 0.0)
    return out


def incident_chain(name: str, incident: IncidentType, policy: Policy) -> str | None:
    """The responder chain an incident type notifies: explicit, else from the policy's rules."""
    if incident.chain is not None:
        return incident.chain
    event = INCIDENT_EVENTS.get(name)
    for rule in policy.rules:
        events = getattr(rule.when, "event", None)
        names = [events] if isinstance(events, str) else (events or [])
        if event in names and rule.enabled:
            for action in rule.then:
                chain = getattr(action, "notify", None) or getattr(action, "chain", None)
                if chain:
                    return str(chain)
    return None


def _cross_check(spec: Scenario, policy: Policy, source: str, problems: list[Problem]) -> None:
    from twin.kpis import is_known_kpi

    try:
        ZoneInfo(spec.site.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(
            Problem(
                source,
                "site.timezone",
                f"unknown time zone {spec.site.timezone!r}; expected an IANA name such as 'Asia/Shanghai'",
            )
        )
    try:
        dt.date.fromisoformat(spec.scenario.start)
    except ValueError:
        problems.append(Problem(source, "scenario.start", "expected a date 'YYYY-MM-DD'"))
    roles = {role for chain in policy.chains.values() for role in chain.roles}
    for i, group in enumerate(spec.responders):
        if group.role not in roles:
            problems.append(
                Problem(
                    source,
                    f"responders[{i}].role",
                    f"role {group.role!r} is in no chain of the policy; chains use {sorted(roles)}",
                )
            )
        try:
            parse_shift(group.shift)
        except ValueError as exc:
            problems.append(Problem(source, f"responders[{i}].shift", str(exc)))
    check_channels(spec.channels, spec.dispatch.answer, policy.chains, source, problems)
    for area in spec.residents:
        if area not in AREAS:
            problems.append(Problem(source, f"residents.{area}", f"unknown area; expected one of {AREAS}"))
    for name, incident in spec.incidents.items():
        chain = incident_chain(name, incident, policy)
        if chain is None:
            problems.append(
                Problem(
                    source,
                    f"incidents.{name}.chain",
                    "no chain given and no policy rule notifies one for this event; "
                    f"set chain to one of {sorted(policy.chains)}",
                )
            )
        elif chain not in policy.chains:
            problems.append(
                Problem(
                    source,
                    f"incidents.{name}.chain",
                    f"unknown chain {chain!r}; the policy defines {sorted(policy.chains)}",
                )
            )
        if name != "lamp_outage" and incident.per_day == 0 and incident.per_resident_year == 0:
            problems.append(Problem(source, f"incidents.{name}", "set per_day or per_resident_year above 0"))
    for i, gate in enumerate(spec.gates):
        if not is_known_kpi(gate.kpi):
            problems.append(
                Problem(source, f"gates[{i}].kpi", f"unknown KPI {gate.kpi!r}; see `twin kpis` for the names")
            )
    district = spec.district
    if district.lamps_file is None and district.town_lamps + district.villages == 0:
        problems.append(Problem(source, "district", "no lamps: set town_lamps/villages or lamps_file"))
    lo, hi = spec.failures.age_years
    if lo > hi:
        problems.append(Problem(source, "failures.age_years", "expected [min, max], min <= max"))


def _point_at_unknown_field(problem: Problem) -> Problem:
    """msgspec names the table holding an unknown key; name the key itself in the path."""
    match = re.search(r"unknown field `([^`]+)`", problem.message)
    if match is None:
        return problem
    path = f"{problem.path}.{match.group(1)}" if problem.path else match.group(1)
    return Problem(problem.source, path, "unknown key; check its spelling against the schema")


def load_scenario(path: str | Path, policy_override: str | Path | None = None) -> LoadedScenario:
    """Read, validate and cross-check a scenario and its policy; raise ConfigError listing all."""
    path = Path(path)
    source = str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError([Problem(source, "", f"cannot read scenario: {exc.strerror}")]) from None
    raw = load_toml(data, source)
    problems: list[Problem] = []
    raw = check_keyed_tables(raw, source, problems)
    spec = convert_section(raw, Scenario, source, "", problems)
    if spec is None:
        raise ConfigError([_point_at_unknown_field(p) for p in problems])
    if policy_override is not None:
        policy_path = Path(policy_override)
        where = "--policy"
    else:
        policy_path = path.parent / spec.policy.file
        where = "policy.file"
    try:
        policy_bytes = policy_path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            [
                Problem(
                    source,
                    where,
                    f"cannot read policy {str(policy_path)!r}: {exc.strerror}; "
                    "the path is relative to the scenario file",
                )
            ]
        ) from None
    policy = parse_policy(policy_bytes, str(policy_path))
    _cross_check(spec, policy, source, problems)
    if spec.district.lamps_file is not None and not (path.parent / spec.district.lamps_file).is_file():
        problems.append(
            Problem(
                source,
                "district.lamps_file",
                f"no such file {spec.district.lamps_file!r} (relative to the scenario file)",
            )
        )
    if problems:
        raise ConfigError(problems)
    return LoadedScenario(
        spec=spec,
        path=str(path),
        sha256=hashlib.sha256(data).hexdigest(),
        policy=policy,
        policy_path=str(policy_path),
        policy_bytes=policy_bytes,
    )


def chain_ack_timeout_minutes(policy: Policy, chain: str) -> float:
    return parse_duration(policy.chains[chain].ack_timeout) / 60.0


def chain_channel_starts(policy: Policy, chain: str) -> dict[str, float]:
    """The chain's channels, each with its start in minutes after the step starts (``after``)."""
    c = policy.chains[chain]
    return {name: parse_duration(c.after.get(name, 0)) / 60.0 for name in c.channels}


def chain_resolve_timeout_minutes(policy: Policy, chain: str) -> float:
    return parse_duration(policy.chains[chain].resolve_timeout) / 60.0
