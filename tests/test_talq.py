"""TALQ 2.7.1 export and import (edge_agent/talq, docs/TALQ.md).

1. Exported documents validate against the official 2.7.1 OpenAPI component schemas ($refs
   resolved within the OpenAPI file; each object against its concrete schema).
2. policy -> TALQ -> policy gives every lamp group the same level at every minute of a year at
   Naxi, computed with the gateway's own decision functions on both policies.
3. What TALQ cannot express is listed by name (rules by id, chains, civil twilight, ...).
4. A malformed TALQ document fails on import with the JSON path of the bad value.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from typer.testing import CliRunner

from edge_agent.cli.main import app
from edge_agent.policy.lighting import decide_level, lamp_level, night_of, night_switch_minutes, program_level
from edge_agent.policy.model import Policy, parse_policy
from edge_agent.policy.programs import CompiledProgram, compile_programs
from edge_agent.policy.sun import ZENITH_OFFICIAL, sun_event_minute
from edge_agent.talq import Site, TalqError, export_talq, import_talq, policy_toml

ROOT = Path(__file__).resolve().parents[1]
POLICIES = sorted((ROOT / "scenarios" / "policies").glob("*.toml"))
NAXI = Site(28.77, 105.37, "Asia/Shanghai")
YEAR = 2025
OPENAPI = Path(
    os.environ.get("TALQ_OPENAPI", ROOT.parent / "shared" / "standards" / "talq" / "talq-data-model-2-7-1-online.json")
)

# A policy that uses what the scenario policies do not: clock switching, steps before switch-on
# and after switch-off (never in force), two steps at one minute, a program without a boost.
CLOCK_POLICY = b"""
[policy]
name = "clock-test"

[programs.market]
on = "18:30"
off = "06:15"
level = 90
steps = [ { at = "17:00", level = 10 }, { at = "23:00", level = 40 }, { at = "23:00", level = 60 },
          { at = "07:00", level = 5 } ]

[programs.late]
on = "sunset+20m"
off = "sunrise"
level = 70
steps = [ { at = "01:00", level = 35 } ]
boost = { level = 85, minutes = 2.5 }

[assign]
square = "market"
default = "late"
"""


def load(path: Path) -> Policy:
    return parse_policy(path.read_bytes(), str(path))


# ----- 1. schema validation --------------------------------------------------------------------
@pytest.fixture(scope="module")
def talq_validate() -> Any:
    if not OPENAPI.exists():
        pytest.skip(f"TALQ OpenAPI file not found at {OPENAPI} (set TALQ_OPENAPI)")
    import jsonschema
    import referencing
    from referencing.jsonschema import DRAFT4

    spec = json.loads(OPENAPI.read_text())
    assert spec["info"]["version"] == "2.7.1"
    uri = "urn:talq:2.7.1"
    registry = referencing.Registry().with_resource(uri, DRAFT4.create_resource(spec))
    formats = jsonschema.FormatChecker([])

    @formats.checks("time", raises=ValueError)  # type: ignore[untyped-decorator,unused-ignore]
    def _time(value: object) -> bool:  # TALQ: 'hh:mm:ss' local time (not RFC 3339 with an offset)
        return not isinstance(value, str) or re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d:[0-5]\d", value) is not None

    @formats.checks("date", raises=ValueError)  # type: ignore[untyped-decorator,unused-ignore]
    def _date(value: object) -> bool:
        return not isinstance(value, str) or bool(date.fromisoformat(value))

    def validate(obj: Any, schema: str) -> None:
        assert schema in spec["components"]["schemas"], schema
        # OpenAPI 3.0 schema objects are JSON Schema draft 4/5 with extensions (nullable,
        # discriminator) that a draft-4 validator ignores; discriminators are followed below.
        validator = jsonschema.Draft4Validator(
            {"$ref": f"{uri}#/components/schemas/{schema}"}, registry=registry, format_checker=formats
        )
        validator.validate(obj)

    return validate


def validate_document(document: dict[str, Any], validate: Any) -> int:
    """Each object against its concrete component schema (following TALQ's discriminators)."""
    count = 0

    def check(obj: Any, schema: str) -> None:
        nonlocal count
        validate(obj, schema)
        count += 1

    def command(obj: dict[str, Any]) -> None:
        check(obj, "CommandBase")
        check(obj["state"], obj["state"]["name"])

    for program in document["controlPrograms"]:
        check(program, "ControlProgram")
        check(program, program["type"])
        for period in program["activePeriods"]:
            check(period, period["name"])
        for control in program["fixedTimeControls"]:
            check(control, "FixedTimeControl")
            command(control["command"])
        for control in program.get("astroClockTimeControls", []):
            check(control, "AstroClockTimeControl")
            command(control["command"])
        for control in program.get("dynamicControls", []):
            check(control, "DynamicControl")
            check(control["effect"], control["effect"]["type"])
            command(control["effect"]["command"])
    for calendar in document["calendars"]:
        check(calendar, "Calendar")
        for rule in calendar["rules"]:
            check(rule, "CalendarRule")
    for group in document["groups"]:
        check(group, "Group")
    return count


@pytest.mark.parametrize("path", POLICIES, ids=[p.stem for p in POLICIES])
def test_exported_documents_validate_against_the_talq_schemas(path: Path, talq_validate: Any) -> None:
    document, _ = export_talq(load(path), site=NAXI)
    assert validate_document(document, talq_validate) > 20
    fixed = [c["startTime"] for p in document["controlPrograms"] for c in p["fixedTimeControls"]]
    assert fixed, "no fixed-time controls exported"
    for program in document["controlPrograms"]:  # TALQ: increasing order, no two at the same time
        times = [c["startTime"] for c in program["fixedTimeControls"]]
        assert times == sorted(set(times))


def test_clock_programs_validate_too(talq_validate: Any) -> None:
    document, _ = export_talq(parse_policy(CLOCK_POLICY), site=NAXI)
    validate_document(document, talq_validate)
    market = next(p for p in document["controlPrograms"] if p["id"] == "market")
    assert market["activePeriods"] == [{"name": "AbsoluteActivePeriod", "startTime": "18:30:00", "endTime": "06:15:00"}]


def test_the_validator_is_not_vacuous(talq_validate: Any) -> None:
    from jsonschema import ValidationError

    document, _ = export_talq(load(ROOT / "scenarios/policies/naxi-standard.toml"), site=NAXI)
    corruptions: tuple[Callable[[dict[str, Any]], object], ...] = (
        lambda d: d["controlPrograms"][0]["fixedTimeControls"][0]["command"]["state"].update(value=150),
        lambda d: d["controlPrograms"][0]["fixedTimeControls"][0].update(startTime="7:30"),
        lambda d: d["controlPrograms"][0]["activePeriods"][0].update(sunsetOffset=5.5),
        lambda d: d["calendars"][0].pop("ownerCMS"),
        lambda d: d["controlPrograms"][0]["dynamicControls"][0]["effect"].update(operation="Boost"),
    )
    for corrupt in corruptions:
        bad = copy.deepcopy(document)
        corrupt(bad)
        with pytest.raises(ValidationError):
            validate_document(bad, talq_validate)


# ----- 2. round trip: same decision at every minute of a year ----------------------------------
def year_levels(policy: Policy, group: str, site: Site, boost: bool) -> list[float]:
    """Every local minute of ``YEAR``: the level the gateway decides for a lamp of ``group``.

    The gateway's ``decide_level`` in its two stages (switch minutes once per night, then
    ``program_level`` and ``lamp_level`` per minute), as the twin runs it; a sample of minutes is
    checked against ``decide_level`` itself below.
    """
    name = policy.program_for_group(group)
    assert name is not None, group
    program = compile_programs(policy)[name]
    zone = ZoneInfo(site.tz)
    epoch = date(1970, 1, 1).toordinal()
    levels: list[float] = []
    nights: dict[tuple[int, float], tuple[float, float]] = {}
    day = date(YEAR, 1, 1)
    while day.year == YEAR:
        epoch_day = day.toordinal() - epoch
        offset = _offset(zone, day)
        for minute in range(1440):
            night = night_of(epoch_day, minute)
            key = (night, offset)
            if key not in nights:
                nights[key] = night_switch_minutes(
                    night,
                    site.latitude,
                    site.longitude,
                    offset,
                    program.on_kind,
                    program.on_value,
                    program.off_kind,
                    program.off_value,
                )
            on, off = nights[key]
            level = program_level(
                minute, on, off, program.base_level, program.step_minutes, program.step_levels, program.n_steps
            )
            levels.append(lamp_level(level, boost, program.boost_level, -1.0))
        day = date.fromordinal(day.toordinal() + 1)
    return levels


def _offset(zone: ZoneInfo, day: date) -> float:
    offset = datetime(day.year, day.month, day.day, 12, tzinfo=zone).utcoffset()
    return offset.total_seconds() / 60.0 if offset else 0.0


def _spot_check(program: CompiledProgram, levels: list[float], site: Site, boost: bool) -> None:
    zone = ZoneInfo(site.tz)
    first = date(YEAR, 1, 1).toordinal()
    for index in range(0, len(levels), 997):
        day = date.fromordinal(first + index // 1440)
        expected = decide_level(
            day.toordinal() - date(1970, 1, 1).toordinal(),
            index % 1440,
            site.latitude,
            site.longitude,
            _offset(zone, day),
            program.on_kind,
            program.on_value,
            program.off_kind,
            program.off_value,
            program.base_level,
            program.step_minutes,
            program.step_levels,
            program.n_steps,
            boost,
            program.boost_level,
            -1.0,
        )
        assert levels[index] == expected


def assert_same_year(original: Policy, imported: Policy, site: Site) -> None:
    groups = sorted(set(original.assign) | set(imported.assign) | {"a-group-not-in-assign"})
    assert {g: original.program_for_group(g) for g in groups} == {g: imported.program_for_group(g) for g in groups}
    for group in groups:
        for boost in (False, True):
            before = year_levels(original, group, site, boost)
            after = year_levels(imported, group, site, boost)
            assert len(before) == 365 * 1440
            program = compile_programs(original)[original.program_for_group(group) or ""]
            _spot_check(program, before, site, boost)
            diffs = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
            assert not diffs, (
                f"group {group} (boost {boost}): {len(diffs)} minutes differ, first on day {diffs[0] // 1440} "
                f"at {diffs[0] % 1440 // 60:02d}:{diffs[0] % 60:02d}: {before[diffs[0]]} -> {after[diffs[0]]}"
            )
            assert max(before) > 0, "the program never lights: the comparison would prove nothing"


@pytest.mark.slow
@pytest.mark.parametrize("path", POLICIES, ids=[p.stem for p in POLICIES])
def test_round_trip_keeps_every_minute_of_a_year_at_naxi(path: Path) -> None:
    original = load(path)
    document, unsupported = export_talq(original, site=NAXI)
    assert not [item for item in unsupported if item.startswith("programs.")], unsupported
    imported, lost = import_talq(json.loads(json.dumps(document)), site=NAXI)
    assert lost == []
    assert imported.policy.name == original.policy.name
    assert_same_year(original, imported, NAXI)
    assert not imported.rules and not imported.chains  # not lighting: reported on export, not carried


@pytest.mark.slow
def test_round_trip_of_clock_programs_keeps_every_minute() -> None:
    original = parse_policy(CLOCK_POLICY)
    document, unsupported = export_talq(original, site=NAXI)
    assert not unsupported, unsupported
    market = next(p for p in document["controlPrograms"] if p["id"] == "market")
    # the 17:00 (before switch-on) and 07:00 (after switch-off) steps never act and are left out;
    # of the two 23:00 steps the later one wins, as in the gateway
    assert [(c["startTime"], c["command"]["state"]["value"]) for c in market["fixedTimeControls"]] == [
        ("12:00:00", 90),
        ("23:00:00", 60),
    ]
    imported, lost = import_talq(document, site=NAXI)
    assert lost == []
    assert_same_year(original, imported, NAXI)


def test_imported_policy_text_parses_to_the_same_policy() -> None:
    original = load(ROOT / "scenarios/policies/naxi-standard.toml")
    imported, _ = import_talq(export_talq(original, site=NAXI)[0], site=NAXI)
    again = parse_policy(policy_toml(imported).encode())
    assert again.programs == imported.programs == original.programs
    assert again.assign == imported.assign == original.assign


# ----- 3. what TALQ cannot express is named ----------------------------------------------------
def test_rules_and_chains_are_reported_by_id() -> None:
    policy = load(ROOT / "scenarios/policies/naxi-standard.toml")
    _, unsupported = export_talq(policy, site=NAXI)
    for rule in policy.rules:
        assert sum(item.startswith(f"rules.{rule.id}:") for item in unsupported) == 1, rule.id
    for chain in policy.chains:
        assert any(item.startswith(f"chains.{chain}:") for item in unsupported), chain
    assert len(unsupported) == len(policy.rules) + len(policy.chains)


def test_motion_boost_maps_to_a_sensor_driven_dynamic_control() -> None:
    document, _ = export_talq(load(ROOT / "scenarios/policies/naxi-standard.toml"), site=NAXI)
    town = next(p for p in document["controlPrograms"] if p["id"] == "town")
    assert town["dynamicControls"] == [
        {
            "effect": {
                "type": "FixedControlEffect",
                "source": {"sensor": {"sensorAddresses": []}},
                "operation": "Max",
                "holdTime": 300.0,
                "command": {"state": {"name": "LevelState", "value": 100}},
            }
        }
    ]


def _variant(program: str) -> Policy:
    return parse_policy(f'[policy]\nname = "variant"\n[programs.p]\n{program}\n[assign]\ndefault = "p"\n'.encode())


@pytest.mark.parametrize(
    ("program", "expected"),
    [
        # a boost over a step at 0: ours leaves the lamp off, TALQ's Max would light it
        (
            'level = 60\nsteps = [ { at = "01:00", level = 0 } ]\nboost = { level = 100, minutes = 5 }',
            "programs.p.boost",
        ),
        ('on = "dusk+5m"', "programs.p.on"),  # civil twilight: TALQ has sunrise/sunset only
        ('off = "dawn"', "programs.p.off"),
        ('on = "sunset+90s"', "programs.p.on"),  # TALQ offsets are whole minutes
        ('on = "sunset"\noff = "23:00"', "programs.p.off"),  # mixed sun / clock switching
        ('on = "18:00"\noff = "sunrise"', "programs.p.on"),
        ('on = "11:00"\noff = "13:00"', "programs.p:"),  # crosses noon: never lit in our model
    ],
)
def test_what_talq_cannot_express_is_named(program: str, expected: str) -> None:
    _, unsupported = export_talq(_variant(program), site=NAXI)
    assert any(item.startswith(expected) for item in unsupported), unsupported


def test_a_step_before_a_sun_based_switch_on_is_named_where_it_happens() -> None:
    # 21:30 comes before sunset in an Oslo summer: TALQ would apply 80% from switch-on, we 100%
    policy = _variant('level = 100\nsteps = [ { at = "21:30", level = 80 }, { at = "00:00", level = 50 } ]')
    oslo = Site(59.91, 10.75, "Europe/Oslo")
    assert any(item.startswith("programs.p.steps[0] (21:30)") for item in export_talq(policy, site=oslo)[1])
    assert not [item for item in export_talq(policy, site=NAXI)[1] if item.startswith("programs.")]
    unchecked = export_talq(policy)[1]  # no site: named, with the reason it was not checked
    assert any(item.startswith("programs.p.steps[0]") and "no site" in item for item in unchecked)


def test_importing_talq_features_we_lack_names_them_by_path() -> None:
    document = {
        "controlPrograms": [
            {
                "type": "ControlProgramOne",
                "id": "foreign",
                "ownerCMS": "other-cms",
                "activePeriods": [
                    {
                        "name": "AstroAndSensorActivePeriod",
                        "sunsetOffset": 0,
                        "sunriseOffset": 0,
                        "sensor": {},
                        "pcActiveBeforeSunset": 10,
                        "pcActiveBeforeSunrise": 10,
                    }
                ],
                "fixedTimeControls": [
                    {"startTime": "12:00:00", "command": {"state": {"name": "LevelState", "value": 90}}},
                    {
                        "startTime": "23:00:30",
                        "command": {"state": {"name": "LevelState", "value": 40}, "rampToLevelTime": 60},
                    },
                ],
            },
            {
                "type": "ControlProgramOne",
                "id": "astro",
                "ownerCMS": "other-cms",
                "activePeriods": [],
                "fixedTimeControls": [],
                "astroClockTimeControls": [
                    {
                        "offset": 7,
                        "solarEventType": "sunset",
                        "operation": "Set",
                        "command": {"state": {"name": "LevelState", "value": 75}},
                    },
                    {
                        "offset": -3,
                        "solarEventType": "sunrise",
                        "operation": "Set",
                        "command": {"state": {"name": "LevelState", "value": 0}},
                    },
                ],
            },
        ],
        "calendars": [
            {
                "id": "main",
                "ownerCMS": "other-cms",
                "defaultProgram": "foreign",
                "rules": [{"program": "astro", "condition": {"type": "ccDay", "days": [{"start": 6, "end": 7}]}}],
            },
            {"id": "side", "ownerCMS": "other-cms", "rules": [{"program": "astro"}]},
        ],
    }
    policy, lost = import_talq(document, site=NAXI)
    assert policy.assign == {"main": "foreign", "side": "astro"}
    foreign, astro = policy.programs["foreign"], policy.programs["astro"]
    assert (foreign.on, foreign.off, foreign.level, [(s.at, s.level) for s in foreign.steps]) == (
        "sunset",
        "sunrise",
        90,
        [("23:00", 40)],
    )
    assert (astro.on, astro.off, astro.level, astro.steps) == ("sunset+7m", "sunrise-3m", 75, [])
    for path in (
        "$.controlPrograms[0].activePeriods[0]:",  # the photocell part
        "$.controlPrograms[0].fixedTimeControls[1].startTime:",  # seconds
        "$.controlPrograms[0].fixedTimeControls[1].command.rampToLevelTime:",
        "$.calendars[0].rules[0]:",  # a weekend rule
    ):
        assert any(item.startswith(path) for item in lost), (path, lost)


def _talq_reference_levels(document: dict[str, Any], site: Site) -> list[float]:
    """A plain reading of TALQ for one ControlProgramOne with an astro-clock active period: lit
    from sunset+offset to the next sunrise+offset; the level is the fixed-time control most
    recently started (wrapping from the day before)."""
    program = document["controlPrograms"][0]
    period = program["activePeriods"][0]
    controls = sorted(
        (int(c["startTime"][:2]) * 60 + int(c["startTime"][3:5]), c["command"]["state"]["value"])
        for c in program["fixedTimeControls"]
    )
    zone = ZoneInfo(site.tz)
    levels: list[float] = []
    day = date(YEAR, 1, 1)
    while day.year == YEAR:
        epoch_day = day.toordinal() - date(1970, 1, 1).toordinal()
        offset = _offset(zone, day)
        for minute in range(1440):
            night = night_of(epoch_day, minute)
            sunset = sun_event_minute(night, site.latitude, site.longitude, offset, ZENITH_OFFICIAL, False)
            sunrise = sun_event_minute(night + 1, site.latitude, site.longitude, offset, ZENITH_OFFICIAL, True)
            start, end = sunset + period["sunsetOffset"], sunrise + period["sunriseOffset"]
            lit = (start - 720) % 1440 <= (minute - 720) % 1440 < (end - 720) % 1440
            before = [level for at, level in controls if at <= minute]
            levels.append(float(before[-1] if before else controls[-1][1]) if lit else 0.0)
        day = date.fromordinal(day.toordinal() + 1)
    return levels


@pytest.mark.slow
def test_a_foreign_program_imports_as_talq_reads_it() -> None:
    # another CMS's layout: the evening level starts at 18:00 (before every Naxi sunset), not at noon
    document = {
        "controlPrograms": [
            {
                "type": "ControlProgramOne",
                "id": "foreign",
                "ownerCMS": "other-cms",
                "activePeriods": [{"name": "AstroClockActivePeriod", "sunsetOffset": 3, "sunriseOffset": -7}],
                "fixedTimeControls": [
                    {"startTime": t, "command": {"state": {"name": "LevelState", "value": v}}}
                    for t, v in (("06:00:00", 0), ("18:00:00", 100), ("23:00:00", 50), ("04:30:00", 70))
                ],
            }
        ],
        "calendars": [{"id": "default", "ownerCMS": "other-cms", "defaultProgram": "foreign"}],
    }
    policy, lost = import_talq(document, site=NAXI)
    assert lost == []
    assert policy.programs["foreign"].level == 100
    assert year_levels(policy, "any", NAXI, False) == _talq_reference_levels(document, NAXI)


# ----- 4. malformed documents: errors name the JSON path ---------------------------------------
def _exported() -> dict[str, Any]:
    return export_talq(load(ROOT / "scenarios/policies/naxi-standard.toml"), site=NAXI)[0]


@pytest.mark.parametrize(
    ("corrupt", "path"),
    [
        (
            lambda d: d["controlPrograms"][0]["fixedTimeControls"][1].pop("startTime"),
            "$.controlPrograms[0].fixedTimeControls[1].startTime",
        ),
        (
            lambda d: d["controlPrograms"][1]["fixedTimeControls"][0].update(startTime="25:00:00"),
            "$.controlPrograms[1].fixedTimeControls[0].startTime",
        ),
        (
            lambda d: d["controlPrograms"][0]["fixedTimeControls"][2]["command"]["state"].update(value=150),
            "$.controlPrograms[0].fixedTimeControls[2].command.state.value",
        ),
        (
            lambda d: d["controlPrograms"][0]["activePeriods"][0].update(sunsetOffset="5"),
            "$.controlPrograms[0].activePeriods[0].sunsetOffset",
        ),
        (lambda d: d["controlPrograms"][1].update(activePeriods={}), "$.controlPrograms[1].activePeriods"),
        (lambda d: d["calendars"][2].update(defaultProgram="nowhere", rules=[]), "$.calendars[2].defaultProgram"),
        (
            lambda d: d["calendars"][0]["rules"][0].update(condition={"days": []}),
            "$.calendars[0].rules[0].condition.type",
        ),
        (lambda d: d.pop("controlPrograms"), "$.controlPrograms"),
        (
            lambda d: d["controlPrograms"][0]["dynamicControls"][0]["effect"].pop("command"),
            "$.controlPrograms[0].dynamicControls[0].effect.command",
        ),
    ],
)
def test_a_malformed_document_names_the_json_path(corrupt: Any, path: str) -> None:
    document = _exported()
    corrupt(document)
    with pytest.raises(TalqError) as caught:
        import_talq(document)
    assert caught.value.path == path
    assert str(caught.value).startswith(path + ":")


# ----- the command line ------------------------------------------------------------------------
def test_cli_export_warns_by_name_and_strict_exits_3(tmp_path: Path) -> None:
    out = tmp_path / "program.json"
    policy = str(ROOT / "scenarios/policies/naxi-standard.toml")
    site = ["--latitude", "28.77", "--longitude", "105.37", "--tz", "Asia/Shanghai"]
    result = CliRunner().invoke(app, ["talq", "export", policy, "--out", str(out), *site])
    assert result.exit_code == 0, result.output
    assert "warning" in result.stderr and "rules.market-night" in result.stderr and "chains.medical" in result.stderr
    assert json.loads(out.read_text())["talqVersion"] == "2.7.1"
    strict = CliRunner().invoke(app, ["talq", "export", policy, "--out", str(out), "--strict", *site])
    assert strict.exit_code == 3


def test_cli_import_writes_a_policy_and_names_the_path_of_a_bad_value(tmp_path: Path) -> None:
    document = _exported()
    source = tmp_path / "program.json"
    source.write_text(json.dumps(document))
    out = tmp_path / "policy.toml"
    result = CliRunner().invoke(app, ["talq", "import", str(source), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert load(out).programs == load(ROOT / "scenarios/policies/naxi-standard.toml").programs
    document["controlPrograms"][0]["fixedTimeControls"][0]["command"]["state"]["value"] = -1
    source.write_text(json.dumps(document))
    bad = CliRunner().invoke(app, ["talq", "import", str(source), "--out", str(out)])
    assert bad.exit_code == 2
    assert "$.controlPrograms[0].fixedTimeControls[0].command.state.value" in bad.stderr
