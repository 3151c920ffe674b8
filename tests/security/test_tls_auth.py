"""Who may connect to the city broker at all: mutual TLS with the district CA, and on the
password port a valid user name and password as well. Each refusal is observed exactly (the
broker's TLS alert or CONNACK code) next to a positive control that is accepted.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path

import aiomqtt
import pytest

from tests.security.city import HOST, CityBroker, Pki, city_broker, probe


def server_only(pki: Pki) -> ssl.SSLContext:
    """Trusts the district CA but presents no client certificate."""
    return ssl.create_default_context(cafile=str(pki.ca_pem))


def tls12(context: ssl.SSLContext) -> ssl.SSLContext:
    """Pin TLS 1.2 so that the broker's verdict on the client certificate arrives inside the
    handshake as an alert (under TLS 1.3 the client finishes first and may see only an EOF)."""
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    return context


def refused_with(broker: CityBroker, make: Callable[[], ssl.SSLContext]) -> str:
    """Refused under the default TLS version (1.3) and under 1.2; the 1.2 alert's reason."""
    assert probe(broker.mtls_port, make()).connack is None
    answer = probe(broker.mtls_port, tls12(make()))
    assert answer.connack is None
    return answer.error


def test_valid_client_certificate_is_accepted(broker: CityBroker, pki: Pki, gateways: tuple[str, str]) -> None:
    assert probe(broker.mtls_port, pki.client(gateways[0]).context()).accepted
    assert probe(broker.mtls_port, tls12(pki.client(gateways[0]).context())).accepted


def test_no_client_certificate_is_refused(broker: CityBroker, pki: Pki) -> None:
    assert "HANDSHAKE_FAILURE" in refused_with(broker, lambda: server_only(pki))


def test_certificate_from_another_ca_is_refused(broker: CityBroker, pki: Pki, gateways: tuple[str, str]) -> None:
    assert "UNKNOWN_CA" in refused_with(broker, pki.client(gateways[0], rogue=True).context)


def test_expired_certificate_is_refused(broker: CityBroker, pki: Pki, gateways: tuple[str, str]) -> None:
    assert "CERTIFICATE_EXPIRED" in refused_with(broker, pki.client(gateways[0], expired=True).context)


@pytest.mark.parametrize("which", ["mtls", "password"])
def test_plaintext_to_a_tls_port_is_refused(broker: CityBroker, which: str) -> None:
    port = broker.mtls_port if which == "mtls" else broker.password_port
    answer = probe(port, None, username="centre", password="anything")
    assert answer.connack is None, answer


def test_client_refuses_a_broker_from_another_ca(tmp_path: Path, pki: Pki, gateways: tuple[str, str]) -> None:
    """The other direction: a gateway trusting the district CA will not talk to an impostor."""
    impostor = Pki(tmp_path / "impostor")
    with city_broker(tmp_path / "broker", impostor) as broker:
        answer = probe(broker.mtls_port, pki.client(gateways[0]).context())
    assert answer.connack is None
    assert "CERTIFICATE_VERIFY_FAILED" in answer.error, answer


def test_password_port_needs_certificate_and_right_password(
    tmp_path: Path, pki: Pki, gateways: tuple[str, str]
) -> None:
    gw = gateways[0]
    with city_broker(tmp_path / "broker", pki, passwords={gw: "correct horse"}) as broker:
        port = broker.password_port
        creds = pki.client(gw).context()
        assert probe(port, creds, username=gw, password="correct horse").accepted  # positive control
        assert probe(port, creds, username=gw, password="wrong horse").connack == 5  # not authorised
        assert probe(port, creds, username=gw).connack == 5  # no password
        assert probe(port, creds).connack == 5  # no user name (anonymous)
        assert probe(port, creds, username="nobody", password="correct horse").connack == 5
        no_cert = probe(port, server_only(pki), username=gw, password="correct horse")
        assert no_cert.connack is None, "a password alone is not enough"


async def test_wrong_password_is_refused_through_aiomqtt(tmp_path: Path, pki: Pki, gateways: tuple[str, str]) -> None:
    """The same refusal as the gateway's MQTT library reports it: a CONNACK error, not a hang."""
    gw = gateways[0]
    with city_broker(tmp_path / "broker", pki, passwords={gw: "correct horse"}) as broker:
        client = aiomqtt.Client(
            HOST,
            broker.password_port,
            username=gw,
            password="wrong horse",
            tls_context=pki.client(gw).context(),
            timeout=10,
        )
        with pytest.raises(aiomqtt.MqttCodeError) as refused:
            async with client:
                pass
        assert refused.value.rc in (5, 135)  # MQTT 3.1.1 "not authorised" / MQTT 5 0x87
        assert "wrong horse" not in str(refused.value)
