"""The production broker files themselves: no plaintext listener, every listener mutual TLS,
an ACL that grants by authenticated user name only; and, at run time, a plaintext port exists
only where a config explicitly opens one.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.security.city import PROD_ACL, PROD_CONF, Pki, city_broker, global_options, listeners, probe

TLS_OPTIONS = ("cafile", "certfile", "keyfile")


def plaintext_listeners(conf_text: str) -> list[dict[str, str]]:
    return [block for block in listeners(conf_text) if not all(block.get(opt) for opt in TLS_OPTIONS)]


def test_production_config_has_no_plaintext_listener() -> None:
    text = PROD_CONF.read_text()
    blocks = listeners(text)
    assert [block["listener"] for block in blocks] == ["8883", "8884"]
    assert plaintext_listeners(text) == []
    options = global_options(text)
    assert options.get("per_listener_settings") == "true"  # auth options below are per listener
    assert "port" not in options
    assert "bind_address" not in options
    for block in blocks:
        assert block.get("protocol", "mqtt") == "mqtt", block  # no websockets side door
        assert block["require_certificate"] == "true", block
        assert block["allow_anonymous"] == "false", block
        assert block["acl_file"] == "/etc/mosquitto/acl", block
        assert block.get("tls_version") in ("tlsv1.2", "tlsv1.3"), block
        assert "psk_hint" not in block, block  # PSK would bypass the certificate check
    mtls, password = blocks
    assert mtls["use_identity_as_username"] == "true"  # the certificate's CN is the user name
    assert password["use_identity_as_username"] == "false"
    assert password["password_file"] == "/etc/mosquitto/passwd"


def test_the_plaintext_check_is_not_vacuous() -> None:
    """The parser above does find a plaintext listener when a config opens one."""
    text = PROD_CONF.read_text() + "\nlistener 1884 127.0.0.1\nallow_anonymous true\n"
    assert [block["listener"] for block in plaintext_listeners(text)] == ["1884 127.0.0.1"]
    assert [block["listener"] for block in plaintext_listeners("port 1883\n")] == ["1883"]


def acl_lines(text: str) -> list[tuple[str | None, str, str, str]]:
    """(user or None for pattern/anonymous, kind, access, topic) for each rule of an ACL file."""
    rules: list[tuple[str | None, str, str, str]] = []
    user: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        words = line.split()
        if words[0] == "user":
            user = words[1]
        elif words[0] in ("topic", "pattern"):
            access, topic = (words[1], words[2]) if len(words) == 3 else ("readwrite", words[1])
            rules.append((None if words[0] == "pattern" else user, words[0], access, topic))
        else:
            raise AssertionError(f"unexpected ACL line {line!r}")
    return rules


def test_acl_grants_gateways_their_namespace_only_and_policies_to_the_centre_only() -> None:
    rules = acl_lines(PROD_ACL.read_text())
    patterns = [(access, topic) for user, kind, access, topic in rules if kind == "pattern"]
    topics = [(user, access, topic) for user, kind, access, topic in rules if kind == "topic"]
    assert patterns, "the gateway rules are patterns on %u"
    for access, topic in patterns:
        assert topic.startswith("district/v1/%u/"), topic  # own namespace, by authenticated name
        assert "%c" not in topic  # the client id is chosen by the client: never an identity
        assert "policy" not in topic or topic.endswith("policy/ack") or access == "read", (access, topic)
    # only named users get plain topic rules; anonymous clients get nothing
    assert topics == [("centre", "readwrite", "district/v1/#")]
    writes = [re.sub(r"/#$", "", t) for a, t in patterns if a in ("write", "readwrite")]
    assert not any(w.endswith("/policy") or w == "district/v1/%u" for w in writes)


def test_plaintext_port_exists_only_where_explicitly_configured(tmp_path: Path, pki: Pki) -> None:
    """Run the production config: both ports refuse plaintext MQTT. Add an explicit loopback
    plaintext listener: only that one port answers plaintext, the TLS ports still refuse."""
    with city_broker(tmp_path / "prod", pki) as broker:
        for port in (broker.mtls_port, broker.password_port):
            answer = probe(port, None)
            assert answer.connack is None, (port, answer)
    admin_port = _free_port()
    extra = f"\nlistener {admin_port} 127.0.0.1\nallow_anonymous true\n"
    with city_broker(tmp_path / "admin", pki, extra_config=extra) as broker:
        assert probe(admin_port, None).accepted
        for port in (broker.mtls_port, broker.password_port):
            assert probe(port, None).connack is None


def _free_port() -> int:
    from edge_agent.transports.broker import free_port

    return free_port()


@pytest.mark.parametrize("path", [PROD_CONF, PROD_ACL])
def test_deploy_files_name_no_secret(path: Path) -> None:
    """Keys and passwords live in files the config points to, never in the config itself."""
    text = path.read_text()
    assert "BEGIN" not in text
    assert "PRIVATE KEY" not in text
    assert not re.search(r"^\s*(password|psk|keyfile_password)\s", text, re.MULTILINE)


def _matches(filter_: str, topic: str) -> bool:
    """MQTT topic filter matching (``+`` one level, ``#`` the rest)."""
    f_parts, t_parts = filter_.split("/"), topic.split("/")
    for i, part in enumerate(f_parts):
        if part == "#":
            return True
        if i >= len(t_parts) or (part != "+" and part != t_parts[i]):
            return False
    return len(f_parts) == len(t_parts)


def _gateway_access(topic: str, gateway: str) -> set[str]:
    rights: set[str] = set()
    for user, kind, access, acl_topic in acl_lines(PROD_ACL.read_text()):
        applies = kind == "pattern" or user == gateway
        if applies and _matches(acl_topic.replace("%u", gateway), topic):
            rights.update({"read", "write"} if access == "readwrite" else {access})
    return rights


def namespace() -> list[tuple[str, str, str]]:
    """(topic suffix, from, to) for every topic documented in edge_agent/agent/topics.py."""
    from edge_agent.agent import topics

    doc = topics.__doc__ or ""
    found = re.findall(r"^\s{2}(\S+)\s+(\w+) -> (\w+)", doc, re.MULTILINE)
    # the north lines written without an arrow are the gateway's own reports
    for suffix in ("status", "alert", "event/<topic>"):
        assert re.search(rf"^\s{{2}}{re.escape(suffix)}\s", doc, re.MULTILINE), suffix
        found.append((suffix, "gateway", "centre"))
    assert len(found) >= 16, found
    return found


@pytest.mark.parametrize(("suffix", "source", "target"), namespace())
def test_acl_covers_every_topic_of_the_namespace(suffix: str, source: str, target: str) -> None:
    """Each topic the agent publishes is writable by its gateway, each it consumes readable;
    a topic the centre sends (the policy) is not writable by any gateway. Catches ACL drift
    when topics.py grows (a denied publish is dropped silently under MQTT 3.1.1)."""
    topic = "district/v1/gw1/" + re.sub(r"<\w+>", "X", suffix)
    rights = _gateway_access(topic, "gw1")
    if source == "gateway":
        assert "write" in rights, topic
    if target == "gateway":
        assert "read" in rights, topic
    if source == "centre":
        assert "write" not in rights, topic
    assert _gateway_access(topic, "gw2") == set(), f"another gateway has rights on {topic}"
