"""Gateway and policy configuration: every error names file, key path and expectation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from centre.config import load_centre_config
from edge_agent.config import load_config
from edge_agent.errors import ConfigError
from edge_agent.policy.model import parse_policy

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_configs_and_policies_pass_check() -> None:
    for path in sorted((ROOT / "examples").glob("*.toml")):
        result = subprocess.run(
            [sys.executable, "-m", "edge_agent.cli", "check", "--config", str(path)],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "ok" in result.stdout
    for path in sorted((ROOT / "scenarios" / "policies").glob("*.toml")):
        parse_policy(path.read_bytes(), str(path))
    centre = load_centre_config(ROOT / "examples" / "centre" / "centre.toml")
    assert centre.database_url == f"sqlite:///{ROOT / 'examples' / 'centre' / 'state' / 'centre.db'}"


def test_check_prints_every_problem_and_exits_2(tmp_path: Path) -> None:
    (tmp_path / "policy.toml").write_text(
        """
[policy]
name = "bad"
[programs.main]
on = "sunsett"
steps = [ { at = "25:00", level = 50 } ]
[[rules]]
id = "r1"
when = { trigger = "threshold", field = "heart_rate", above = 130, for = "3 minutes" }
if = "hart_rate > 3"
then = [ { action = "alert", notify = "nobody" } ]
[[rules]]
id = "r1"
when = { trigger = "time", cron = "61 * * * *" }
then = [ { action = "set_lamp", level = 120 } ]
"""
    )
    (tmp_path / "gw.toml").write_text(
        """
[gateway]
id = "gw 1"
latitude = 95
longitude = 105.37
policy = "policy.toml"
[[lamps]]
id = "L1"
colour = "red"
"""
    )
    result = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "check", "-c", str(tmp_path / "gw.toml")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    out = result.stderr
    for expected in (
        "gw.toml: gateway.id",
        "gw.toml: gateway.latitude: Expected `float` <= 90.0",
        "gw.toml: lamps[0].colour: unknown key",
        "policy.toml: programs.main.on: expected e.g. 'sunset'",
        "policy.toml: programs.main.steps[0].at: clock time out of range",
        "policy.toml: rules[0].when.for: expected a duration",
        "policy.toml: rules[0].if: unknown name 'hart_rate' (did you mean 'heart_rate'?)",
        "policy.toml: rules[0].then[0]: unknown responder chain 'nobody'",
        "policy.toml: rules[1].then[0].level",
    ):
        assert expected in out, f"missing {expected!r} in:\n{out}"


def test_reference_errors_are_found_once_the_shapes_are_right(tmp_path: Path) -> None:
    (tmp_path / "policy.toml").write_text((ROOT / "scenarios/policies/naxi-standard.toml").read_text())
    (tmp_path / "gw.toml").write_text(
        """
[gateway]
id = "gw1"
latitude = 28.77
longitude = 105.37
policy = "policy.toml"
timezone = "Mars/Olympus"
[south]
url = "http://broker"
[[lamps]]
id = "L1"
bus = "rs485"
[[lamps]]
id = "L1"
[[wearables]]
id = "W1"
link = "dongle"
"""
    )
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "gw.toml")
    text = str(caught.value)
    for expected in ("gateway.timezone: unknown time zone 'Mars/Olympus'",):
        assert expected in text
    (tmp_path / "gw.toml").write_text((tmp_path / "gw.toml").read_text().replace('timezone = "Mars/Olympus"\n', ""))
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "gw.toml")
    text = str(caught.value)
    for expected in (
        "lamps[0].bus: unknown bus 'rs485'",
        "lamps[0].unit: a lamp on a bus needs a Modbus unit id",
        "lamps[1].id: duplicate device id 'L1'",
        "wearables[0].link: link = 'dongle' needs a [dongle] section",
        "south.url: expected 'embedded', 'none', mqtt://host:port",
        "responders: no responder has a role of chain 'medical'",
    ):
        assert expected in text, f"missing {expected!r} in:\n{text}"


def test_policy_syntax_error_names_the_file() -> None:
    with pytest.raises(ConfigError, match=r"p\.toml: TOML syntax error"):
        parse_policy(b"[policy\nname=1", "p.toml")
    with pytest.raises(ConfigError, match=r"p\.toml: not UTF-8"):
        parse_policy(b"\xff\xfe", "p.toml")


def _gateway_file(tmp_path: Path, brokers: str) -> Path:
    """A minimal valid gateway file with the given [south]/[north] tables."""
    policy = ROOT / "scenarios" / "policies" / "naxi-standard.toml"
    path = tmp_path / "gw.toml"
    path.write_text(
        f"""
[gateway]
id = "gw1"
latitude = 28.77
longitude = 105.37
policy = "{policy}"
[[responders]]
id = "doc1"
role = "village_doctor"
[[responders]]
id = "fixer"
role = "grid_worker"
{brokers}
"""
    )
    return path


def test_broker_protocol_and_session_expiry_are_validated_with_their_key_paths(tmp_path: Path) -> None:
    path = _gateway_file(
        tmp_path,
        """
[south]
url = "mqtt://127.0.0.1:1883"
protocol = "4"
session_expiry = 10
[north]
url = "mqtt://127.0.0.1:1884"
protocol = 5
""",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    text = str(caught.value)
    for expected in (
        "gw.toml: south.protocol: Invalid enum value '4'",
        "gw.toml: south.session_expiry: Expected `int` >= 60",
        "gw.toml: north.protocol: Expected `str`, got `int`",
    ):
        assert expected in text, f"missing {expected!r} in:\n{text}"


def test_links_speak_mqtt5_with_a_persistent_session_unless_told_otherwise(tmp_path: Path) -> None:
    from edge_agent.agent.links import link_settings

    config = load_config(
        _gateway_file(
            tmp_path,
            """
[south]
url = "mqtt://127.0.0.1:1883"
[north]
url = "mqtt://127.0.0.1:1884"
protocol = "3.1.1"
session_expiry = 3600
""",
        )
    )
    south = link_settings(config, "south", config.file.south, "127.0.0.1", 1883)
    assert (south.protocol, south.clean_session, south.session_expiry) == ("5", False, 7 * 24 * 3600)
    north = link_settings(config, "north", config.file.north, "127.0.0.1", 1884)
    assert (north.protocol, north.clean_session, north.session_expiry) == ("3.1.1", False, 3600)
    assert south.unhandled == north.unhandled == "redeliver"
    # the embedded broker (amqtt) speaks only MQTT 3.1.1 and never redelivers: the url says so,
    # or the agent does when it overrides the url
    embedded = link_settings(config, "south", config.file.south, "127.0.0.1", 1883, embedded=True)
    assert (embedded.protocol, embedded.unhandled) == ("3.1.1", "retry")
    (tmp_path / "embedded").mkdir()
    config = load_config(_gateway_file(tmp_path / "embedded", '[south]\nurl = "embedded"\n'))
    embedded = link_settings(config, "south", config.file.south, "127.0.0.1", 1883)
    assert (embedded.protocol, embedded.unhandled) == ("3.1.1", "retry")


def _gateway_with_south(tmp_path: Path, south: str) -> Path:
    (tmp_path / "policy.toml").write_bytes((ROOT / "scenarios" / "policies" / "naxi-standard.toml").read_bytes())
    (tmp_path / "gw.toml").write_text(
        f"""
[gateway]
id = "gw1"
latitude = 28.77
longitude = 105.37
policy = "policy.toml"
[[responders]]
id = "doc"
role = "village_doctor"
[[responders]]
id = "crew"
role = "repair_crew"
[south]
{south}
"""
    )
    return tmp_path / "gw.toml"


def test_a_link_password_can_live_in_a_file_of_its_own(tmp_path: Path) -> None:
    from edge_agent.agent.links import link_settings

    (tmp_path / "south.secret").write_text("s3cret-pw\n")
    config = load_config(
        _gateway_with_south(tmp_path, 'url = "mqtt://127.0.0.1:1883"\nusername = "gw1"\npassword_file = "south.secret"')
    )
    settings = link_settings(config, "south", config.file.south, "127.0.0.1", 1883)
    assert (settings.username, settings.password) == ("gw1", "s3cret-pw")


def test_an_unreadable_password_file_names_its_key(tmp_path: Path) -> None:
    from edge_agent.agent.links import link_settings

    config = load_config(_gateway_with_south(tmp_path, 'url = "mqtt://127.0.0.1:1883"\npassword_file = "missing"'))
    with pytest.raises(ConfigError, match=r"south\.password_file: cannot read it"):
        link_settings(config, "south", config.file.south, "127.0.0.1", 1883)


def test_password_and_password_file_together_are_refused(tmp_path: Path) -> None:
    path = _gateway_with_south(tmp_path, 'password = "a"\npassword_file = "b"')
    with pytest.raises(ConfigError, match=r"south\.password_file: set either password or password_file"):
        load_config(path)


def test_check_names_each_responder_contact_problem_and_never_prints_a_push_token(tmp_path: Path) -> None:
    """``edge-agent check`` on responders' contact channels: an E.164 phone, a push URL file that
    exists and holds one URL Apprise can send to, and an acknowledge link a phone can open."""
    secret = "tk_9f8e7d6c5b4a"
    (tmp_path / "policy.toml").write_text(
        '[policy]\nname = "p"\n[programs.main]\non = "sunset"\noff = "sunrise"\nlevel = 80\n'
        '[assign]\ndefault = "main"\n'
    )
    (tmp_path / "unknown.url").write_text(f"nosuchservice://{secret}@push.example\n")
    (tmp_path / "good.url").write_text(f"ntfy://ntfy.example/{secret}\n")
    (tmp_path / "empty.url").write_text("")
    (tmp_path / "gw.toml").write_text(
        """
[gateway]
id = "gw1"
latitude = 28
longitude = 105
policy = "policy.toml"
[http]
listen = "0.0.0.0:9180"
token = "a-token-of-16-characters"
[modem]
smsdrc = "smsdrc"
[[responders]]
id = "li"
role = "doctor"
phone = "+8613800000001"
push_url_file = "missing.url"
[[responders]]
id = "wang"
role = "doctor"
phone = "13800000002"
push_url_file = "unknown.url"
[[responders]]
id = "zhao"
role = "doctor"
phone = "+86 138 0000 0003"
push_url_file = "empty.url"
[[responders]]
id = "sun"
role = "doctor"
push_url_file = "good.url"
"""
    )
    (tmp_path / "smsdrc").write_text(
        "[gammu]\ndevice = /dev/null\n[smsd]\nservice = files\ninboxformat = detail\n"
        "inboxpath = in/\noutboxpath = out/\nsentsmspath = sent/\nerrorsmspath = error/\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "check", "-c", str(tmp_path / "gw.toml")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    out = " ".join(result.stderr.split())  # the console wraps long lines
    for expected in (
        "gw.toml: responders[0].push_url_file: responder 'li':",
        "missing.url: cannot read the push URL file",
        "gw.toml: responders[1].phone: expected an E.164 number",
        "gw.toml: responders[1].push_url_file: responder 'wang':",
        "Apprise has no service for the scheme 'nosuchservice'",
        "gw.toml: responders[2].phone: expected an E.164 number",
        "gw.toml: responders[2].push_url_file: responder 'zhao':",
        "empty.url: empty",
        "gw.toml: http.public_url: responders get pushes with an acknowledge link",
    ):
        assert expected in out, f"missing {expected!r} in:\n{result.stderr}"
    assert "responders[3]" not in out and "responders[0].phone" not in out  # those are fine
    assert secret not in result.stdout + result.stderr


def test_the_ack_link_base_is_public_url_or_the_listen_address() -> None:
    from edge_agent.config import public_url
    from edge_agent.config.schema import Http

    assert public_url(Http(listen="192.168.1.10:9180")) == "http://192.168.1.10:9180"
    assert public_url(Http(listen="127.0.0.1:0"), "127.0.0.1:41234") == "http://127.0.0.1:41234"
    assert public_url(Http(listen="[::1]:9180")) == "http://[::1]:9180"
    assert public_url(Http(listen="0.0.0.0:9180")) is None  # nobody can open a wildcard
    assert public_url(Http(listen="0.0.0.0:9180", public_url="http://gw.lan:9180/")) == "http://gw.lan:9180"


def test_a_bad_public_url_names_its_key(tmp_path: Path) -> None:
    (tmp_path / "policy.toml").write_text(
        '[policy]\nname = "p"\n[programs.main]\non = "sunset"\noff = "sunrise"\nlevel = 80\n'
        '[assign]\ndefault = "main"\n'
    )
    (tmp_path / "gw.toml").write_text(
        '[gateway]\nid = "gw1"\nlatitude = 28\nlongitude = 105\npolicy = "policy.toml"\n'
        '[http]\npublic_url = "192.168.1.10:9180"\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "gw.toml")
    [problem] = caught.value.problems
    assert problem.path == "http.public_url" and "http(s)://host[:port]" in problem.message
