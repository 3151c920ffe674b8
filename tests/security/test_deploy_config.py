"""The production broker files themselves. The city broker: no plaintext listener, every
listener mutual TLS, an ACL that grants by authenticated user name only; at run time a
plaintext port exists only where a config explicitly opens one. The village broker
(south.conf): reachable from the LAN over TLS, plaintext only on loopback, a password for
every user, and persistence that saves every change.
"""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import pytest

from tests.security.aclfile import parse
from tests.security.city import PROD_ACL, PROD_CONF, Pki, city_broker, global_options, listeners, probe
from tests.security.village import SOUTH_CONF

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


def test_acl_grants_gateways_their_namespace_only_and_policies_to_the_centre_only() -> None:
    rules = parse(PROD_ACL.read_text())
    patterns = [(rule.access, rule.topic) for rule in rules if rule.kind == "pattern"]
    named = [rule for rule in rules if rule.kind == "topic"]
    assert patterns, "the gateway rules are patterns on %u"
    for access, topic in patterns:
        assert topic.startswith("district/v1/%u/"), topic  # own namespace, by authenticated name
        assert "%c" not in topic  # the client id is chosen by the client: never an identity
        assert "policy" not in topic or topic.endswith("policy/ack") or access == "read", (access, topic)
    # only the centre gets plain topic rules; anonymous clients get nothing
    assert {rule.user for rule in named} == {"centre"}
    assert [rule.topic for rule in named if rule.access != "read"] == [
        "district/v1/+/policy",
        "district/v1/+/command/ack",
    ]
    writes = [re.sub(r"/#$", "", t) for a, t in patterns if a in ("write", "readwrite")]
    assert not any(w.endswith("/policy") or w == "district/v1/%u" for w in writes)
    assert not any(w.endswith("/command/ack") for w in writes)  # an operator's ack comes from the centre only


def test_south_config_is_lan_reachable_authenticated_and_persistent() -> None:
    text = SOUTH_CONF.read_text()
    blocks = listeners(text)
    assert [block["listener"] for block in blocks] == ["1883 127.0.0.1", "8883"]
    options = global_options(text)
    assert options.get("per_listener_settings") == "true"  # auth options below are per listener
    assert "port" not in options
    assert "bind_address" not in options
    for block in blocks:
        assert block.get("protocol", "mqtt") == "mqtt", block  # no websockets side door
        assert block["allow_anonymous"] == "false", block
        assert block["password_file"] == "/etc/mosquitto/passwd", block  # one password per user
        assert block["acl_file"] == "/etc/mosquitto/acl", block  # the generated per-gateway ACL
        assert "psk_hint" not in block, block
    local, lan = blocks
    assert plaintext_listeners(text) == [local]  # plaintext on loopback only: the agent itself
    assert lan.get("tls_version") in ("tlsv1.2", "tlsv1.3"), lan
    # sessions, queued QoS 1 messages and retained ones survive a broker restart or crash
    assert options["persistence"] == "true"
    assert options["autosave_on_changes"] == "true"
    assert int(options["autosave_interval"]) == 1  # saved after every change
    assert int(options["max_queued_messages"]) >= 1000
    assert options["set_tcp_nodelay"] == "true"


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
        _listening(admin_port)  # (the broker's start waits for its own two ports, not this one)
        assert probe(admin_port, None).accepted
        for port in (broker.mtls_port, broker.password_port):
            assert probe(port, None).connack is None


def _listening(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
        else:
            return


def _free_port() -> int:
    from edge_agent.transports.broker import free_port

    return free_port()


@pytest.mark.parametrize("path", [PROD_CONF, PROD_ACL, SOUTH_CONF])
def test_deploy_files_name_no_secret(path: Path) -> None:
    """Keys and passwords live in files the config points to, never in the config itself."""
    text = path.read_text()
    assert "BEGIN" not in text
    assert "PRIVATE KEY" not in text
    assert not re.search(r"^\s*(password|psk|keyfile_password)\s", text, re.MULTILINE)
