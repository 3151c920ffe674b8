"""The gateway agent on the shipped layout: its south link to the village broker
(deploy/mosquitto/south.conf: here over the LAN listener's TLS with the gateway's password, the
generated per-gateway ACL) and its north link to the city broker over mutual TLS (and with a
password where the port wants one); it serves an SOS end to end; it refuses plaintext to a
non-loopback broker before any connection is attempted; its logs carry neither the broker
password nor residents' data.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from devtools.gateway_config import write_gateway_config
from edge_agent.agent.app import Agent
from edge_agent.agent.links import link_settings
from edge_agent.cli.acl import south_users
from edge_agent.clock import ManualClock
from edge_agent.config import GatewayConfig, load_config
from edge_agent.errors import ConfigError
from edge_agent.transports.mqtt_settings import LinkSettings
from tests.agent.harness import T0, running
from tests.security.city import CENTRE, CityBroker, Pki, city_broker, receiving
from tests.security.village import VillageBroker, mqtt_client

TEST_NET = "192.0.2.1"  # RFC 5737 TEST-NET-1: never routed; nothing here ever connects to it
PASSWORD = "Pa55-never-in-logs-7f3c"
RESIDENT = "Wang Xiulan"  # a resident's name smuggled into payloads: must never be logged

POLICY = """
[policy]
name = "security-test"

[programs.village]
on = "sunset+10m"
off = "sunrise-15m"
level = 80

[assign]
default = "village"

[chains.medical]
roles = ["village_doctor"]
ack_timeout = "2m"

[[rules]]
id = "sos"
when = { trigger = "event", event = "sos", kind = "wearable" }
then = [ { action = "alert", priority = 1, message = "SOS from {device}", notify = "medical" } ]
"""


def broker_section(
    which: str,
    url: str,
    *,
    tls: bool = True,
    username: str | None = None,
    password: str | None = None,
    allow_plaintext_remote: bool | None = None,
) -> dict[str, Any]:
    """The ``[south]``/``[north]`` table (``which``: for the reader; None values are left out)."""
    table: dict[str, Any] = {
        "url": url,
        "reconnect_min": 0.2,
        "reconnect_max": 1.0,
        "username": username,
        "password": password,
        "allow_plaintext_remote": allow_plaintext_remote,
    }
    if tls:  # paths relative to the gateway file, as in the field
        table["tls"] = {"ca": "tls/district-ca.crt", "cert": "tls/gateway.crt", "key": "tls/gateway.key"}
    return table


def write_gateway(tmp_path: Path, pki: Pki, gw: str, south: dict[str, Any], north: dict[str, Any]) -> GatewayConfig:
    """A gateway directory: gateway.toml, policy.toml and tls/ with the gateway's own PEMs."""
    creds = pki.client(gw)
    tls_dir = tmp_path / "tls"
    tls_dir.mkdir(exist_ok=True)
    shutil.copyfile(creds.ca, tls_dir / "district-ca.crt")
    shutil.copyfile(creds.cert, tls_dir / "gateway.crt")
    shutil.copyfile(creds.key, tls_dir / "gateway.key")
    path = write_gateway_config(
        tmp_path,
        gw,
        policy_text=POLICY,
        south_url=south["url"],
        north_url=north["url"],
        south=south,
        north=north,
        lamps=[{"id": "L1", "group": "village", "zone": "square"}],
        cameras=(),
        wearables=[{"id": "W1", "zone": "lane"}],
        responders=[{"id": "doc1", "role": "village_doctor"}],
    )
    return load_config(path)


@contextlib.contextmanager
def logged(logger: str, fragment: str, times: int = 1) -> Iterator[asyncio.Event]:
    """An event set once ``logger`` has emitted ``times`` records containing ``fragment``
    (records arrive on the loop's thread: aiomqtt drives paho from the event loop)."""
    event = asyncio.Event()
    seen = 0

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            nonlocal seen
            if fragment in record.getMessage():
                seen += 1
                if seen >= times:
                    event.set()

    watch = Watch(logging.DEBUG)
    logging.getLogger(logger).addHandler(watch)
    try:
        yield event
    finally:
        logging.getLogger(logger).removeHandler(watch)


def sos(seq: int = 1) -> bytes:
    return msgspec.json.encode({"v": 1, "event": "sos", "seq": seq})


async def sos_round_trip(city: CityBroker, village: VillageBroker, pki: Pki, gw: str) -> dict[str, Any]:
    """An SOS in from the wearable hub (user W1 on the village broker); the responder alert out to
    the doctor's phone (user doc1, same broker) and the north alert to the centre (city broker)."""
    root = f"district/v1/{gw}"
    async with (
        mqtt_client(city.mtls_port, pki.client(CENTRE).context()) as centre,
        receiving(centre) as seen,
        village.client("doc1") as phone,
        receiving(phone) as paged,
        village.client("W1") as hub,
    ):
        await centre.subscribe(f"{root}/#", qos=1)
        await phone.subscribe(f"{root}/responder/doc1/alert", qos=1)
        await hub.publish(f"{root}/wearable/W1/event", sos(), qos=1)
        page = msgspec.json.decode(await paged.wait_for(f"{root}/responder/doc1/alert"))
        north = msgspec.json.decode(await seen.wait_for(f"{root}/alert"))
        assert await seen.wait_for(f"{root}/status") == b"online"
    assert page["device"] == "W1"
    assert page["status"] == "notified"
    assert page["responder"] == "doc1"
    assert north["alert_id"] == page["alert_id"]
    return dict(page)


@contextlib.contextmanager
def shipped_layout(
    tmp_path: Path, pki: Pki, gw: str, city: CityBroker, *, north_password: str | None = None
) -> Iterator[tuple[GatewayConfig, VillageBroker]]:
    """A gateway whose south link is the village broker's LAN listener (TLS, user = gateway id,
    PASSWORD) and whose north link is the city broker: mTLS on 8883, or with ``north_password``
    the certificate-and-password port 8884."""
    village = VillageBroker(tmp_path / "village", pki)
    south = broker_section("south", f"mqtts://127.0.0.1:{village.lan_port}", username=gw, password=PASSWORD)
    if north_password is None:
        north = broker_section("north", f"mqtts://127.0.0.1:{city.mtls_port}")
    else:
        north = broker_section("north", f"mqtts://127.0.0.1:{city.password_port}", username=gw, password=north_password)
    (tmp_path / "gw").mkdir(parents=True, exist_ok=True)
    config = write_gateway(tmp_path / "gw", pki, gw, south, north)
    passwords = {user.name: f"device-secret-{i}" for i, user in enumerate(south_users(config))}
    passwords[gw] = PASSWORD
    village.start(config, passwords)
    try:
        yield config, village
    finally:
        village.stop()


# ----- connecting over TLS -------------------------------------------------------------------


async def test_agent_serves_over_mutual_tls(
    tmp_path: Path, broker: CityBroker, pki: Pki, gateways: tuple[str, str]
) -> None:
    gw = gateways[0]
    with shipped_layout(tmp_path, pki, gw, broker) as (config, village):
        async with running(config, ManualClock(T0)) as agent:
            await sos_round_trip(broker, village, pki, gw)
            assert agent.south is not None
            assert agent.south.settings.tls is not None  # the village LAN listener, broker verified
            assert agent.north is not None
            assert agent.north.settings.tls is not None
            assert agent.stats.rejected == {}


async def test_agent_with_a_certificate_from_another_ca_never_connects(
    tmp_path: Path, broker: CityBroker, pki: Pki, gateways: tuple[str, str]
) -> None:
    """A config with a self-made certificate: the broker's handshake refuses it, nothing served.

    (aiomqtt only reports the failed attempt after its 10 s timeout; the broker's TLS alert is
    logged at once by the client library, so the test waits for that, not for the timeout.)"""
    gw = gateways[0]
    url = f"mqtts://127.0.0.1:{broker.mtls_port}"
    config = write_gateway(tmp_path, pki, gw, broker_section("south", url), broker_section("north", url))
    rogue = pki.client(gw, rogue=True)
    shutil.copyfile(rogue.cert, tmp_path / "tls" / "gateway.crt")
    shutil.copyfile(rogue.key, tmp_path / "tls" / "gateway.key")
    agent = Agent(config, ManualClock(T0))
    with logged("edge_agent.mqtt.client", "UNKNOWN_CA") as refused:
        task = asyncio.create_task(agent.run())
        try:
            await asyncio.wait_for(refused.wait(), 20)
            assert agent.south is not None
            assert agent.south.connects == 0
            assert not agent.south.connected
            assert not agent.ready.is_set()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


# ----- plaintext to a non-loopback broker ----------------------------------------------------


@pytest.fixture
def no_remote_connections(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """Fail (and record) any attempt to open a socket to a non-loopback address."""
    attempts: list[object] = []
    real_connect = socket.socket.connect
    real_create = socket.create_connection

    def is_remote(address: object) -> bool:
        host = address[0] if isinstance(address, tuple) else address
        return isinstance(host, str) and host not in ("127.0.0.1", "::1", "localhost")

    def guarded_connect(self: socket.socket, address: Any) -> None:
        if is_remote(address):
            attempts.append(address)
            raise AssertionError(f"test tried to connect to {address!r}")
        real_connect(self, address)

    def guarded_create(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
        if is_remote(address):
            attempts.append(address)
            raise AssertionError(f"test tried to connect to {address!r}")
        return real_create(address, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "create_connection", guarded_create)
    yield attempts
    assert attempts == [], f"connection attempted to {attempts}"


@pytest.mark.usefixtures("no_remote_connections")
@pytest.mark.parametrize("which", ["south", "north"])
async def test_plaintext_to_a_remote_broker_is_refused_at_start(
    tmp_path: Path, pki: Pki, gateways: tuple[str, str], which: str
) -> None:
    gw = gateways[0]
    remote = f"mqtt://{TEST_NET}:1883"
    loopback = "mqtt://127.0.0.1:9"  # never reached: the refusal comes first
    south = broker_section("south", remote if which == "south" else loopback, tls=False)
    north = broker_section("north", remote if which == "north" else loopback, tls=False)
    config = write_gateway(tmp_path, pki, gw, south, north)
    agent = Agent(config, ManualClock(T0))
    with pytest.raises(ConfigError) as refused:
        await asyncio.wait_for(agent.run(), 10)
    assert [p.path for p in refused.value.problems] == [f"{which}.url"]
    assert TEST_NET in str(refused.value)
    assert "allow_plaintext_remote" in str(refused.value)
    assert not agent.ready.is_set()
    assert agent.south is None or agent.south.connects + agent.south.failures == 0


@pytest.mark.usefixtures("no_remote_connections")
def test_an_mqtts_url_without_tls_section_is_never_plaintext_to_a_remote_host(
    tmp_path: Path, pki: Pki, gateways: tuple[str, str]
) -> None:
    """Today: refused like plaintext (ConfigError on north.url). With the proposed patch: TLS
    against the system trust store. Either way, never plaintext."""
    config = write_gateway(
        tmp_path,
        pki,
        gateways[0],
        broker_section("south", "mqtt://127.0.0.1:9", tls=False),
        broker_section("north", f"mqtts://{TEST_NET}:8883", tls=False),
    )
    outcome: LinkSettings | ConfigError
    try:
        outcome = link_settings(config, "north", config.file.north, TEST_NET, 8883)
    except ConfigError as refused:
        outcome = refused
    if isinstance(outcome, ConfigError):
        assert [p.path for p in outcome.problems] == ["north.url"]
    else:
        assert outcome.tls is not None


@pytest.mark.usefixtures("no_remote_connections")
def test_allow_plaintext_remote_makes_the_config_acceptable(
    tmp_path: Path, pki: Pki, gateways: tuple[str, str]
) -> None:
    config = write_gateway(
        tmp_path,
        pki,
        gateways[0],
        broker_section("south", "mqtt://127.0.0.1:9", tls=False),
        broker_section("north", f"mqtt://{TEST_NET}:1883", tls=False, allow_plaintext_remote=True),
    )
    settings = link_settings(config, "north", config.file.north, TEST_NET, 1883)  # builds, never connects
    assert settings.host == TEST_NET
    assert settings.tls is None


@pytest.mark.usefixtures("no_remote_connections")
def test_tls_to_a_remote_broker_verifies_the_broker(tmp_path: Path, pki: Pki, gateways: tuple[str, str]) -> None:
    config = write_gateway(
        tmp_path,
        pki,
        gateways[0],
        broker_section("south", "mqtt://127.0.0.1:9", tls=False),
        broker_section("north", f"mqtts://{TEST_NET}:8883"),
    )
    settings = link_settings(config, "north", config.file.north, TEST_NET, 8883)
    assert settings.tls is not None
    assert settings.tls.verify_mode == ssl.CERT_REQUIRED
    assert settings.tls.check_hostname
    assert settings.tls.minimum_version >= ssl.TLSVersion.TLSv1_2


@pytest.mark.usefixtures("no_remote_connections")
def test_an_mqtts_url_always_means_tls(tmp_path: Path, pki: Pki, gateways: tuple[str, str]) -> None:
    config = write_gateway(
        tmp_path,
        pki,
        gateways[0],
        broker_section("south", "mqtt://127.0.0.1:9", tls=False),
        broker_section("north", f"mqtts://{TEST_NET}:8883", tls=False, allow_plaintext_remote=True),
    )
    settings = link_settings(config, "north", config.file.north, TEST_NET, 8883)
    assert settings.tls is not None


# ----- logs ----------------------------------------------------------------------------------


def logged_text(caplog: pytest.LogCaptureFixture) -> str:
    """Everything any log record carries: message, raw args, exception text."""
    parts = [caplog.text]
    for record in caplog.records:
        parts.append(record.getMessage())
        parts.append(repr(record.args))
        if record.exc_info and record.exc_info[1] is not None:
            parts.append(repr(record.exc_info[1]))
        if record.exc_text:
            parts.append(record.exc_text)
    return "\n".join(parts)


@pytest.fixture
def full_logging(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="edge_agent")
    caplog.set_level(logging.DEBUG, logger="edge_agent.mqtt.client")  # paho's own debug lines too
    return caplog


def password_gateway(tmp_path: Path, pki: Pki, gw: str, port: int, password: str = PASSWORD) -> GatewayConfig:
    """Both links on the city broker's certificate-and-password port (for refusals at CONNECT)."""
    url = f"mqtts://127.0.0.1:{port}"
    return write_gateway(
        tmp_path,
        pki,
        gw,
        broker_section("south", url, username=gw, password=password),
        broker_section("north", url, username=gw, password=password),
    )


# payloads that the agent rejects; each carries a resident's name that must not be logged
REJECTED_WITHOUT_ECHO = {
    "bad_json": b'{"v":1,"event":"sos","note":"' + RESIDENT.encode() + b'", ',
    "invalid_utf8": b'{"v":1,"event":"sos\xff","note":"' + RESIDENT.encode() + b'"}',
    "wrong_type": msgspec.json.encode({"v": 1, "event": "sos", "seq": RESIDENT}),
    "bad_version": msgspec.json.encode({"v": RESIDENT, "event": "sos"}),
    "not_an_object": msgspec.json.encode([RESIDENT]),
    "oversized": msgspec.json.encode({"v": 1, "event": "sos", "note": RESIDENT * 2000}),
}


async def test_password_and_residents_data_never_logged(
    tmp_path: Path, pki: Pki, gateways: tuple[str, str], full_logging: pytest.LogCaptureFixture
) -> None:
    gw = gateways[0]
    root = f"district/v1/{gw}"
    with (
        city_broker(tmp_path / "broker", pki, passwords={gw: PASSWORD}) as broker,
        shipped_layout(tmp_path, pki, gw, broker, north_password=PASSWORD) as (config, village),
    ):
        async with running(config, ManualClock(T0)) as agent:
            page = await sos_round_trip(broker, village, pki, gw)
            assert page["message"] == "SOS from W1"
            async with village.client("W1") as hub:
                for payload in REJECTED_WITHOUT_ECHO.values():
                    await hub.publish(f"{root}/wearable/W1/event", payload, qos=1)
                # unknown fields are ignored, not echoed: this SOS is served (an alert, queued
                # while doc1, the only doctor, has the first one unanswered)
                extra = msgspec.json.encode({"v": 1, "event": "sos", "resident": RESIDENT, "address": "No. 3 Lane"})
                await hub.publish(f"{root}/wearable/W1/event", extra, qos=1)
            for _ in range(500):
                if len(agent.store.alerts.newest()) == 2:
                    break
                await asyncio.sleep(0.02)
            assert sorted(a.status for a in agent.store.alerts.newest()) == ["notified", "queued"]
            assert sum(agent.stats.rejected.values()) == len(REJECTED_WITHOUT_ECHO), agent.stats.rejected
    text = logged_text(full_logging)
    rejected = [r for r in full_logging.records if r.getMessage().startswith("rejected")]
    assert len(rejected) == len(REJECTED_WITHOUT_ECHO), "the rejections were logged (so the check below bites)"
    assert "link connected" in text  # the agent did log its connections
    assert PASSWORD not in text
    assert RESIDENT not in text
    assert "No. 3 Lane" not in text


async def test_password_not_logged_when_the_broker_refuses_it(
    tmp_path: Path, pki: Pki, gateways: tuple[str, str], full_logging: pytest.LogCaptureFixture
) -> None:
    gw = gateways[0]
    wrong = "Wr0ng-but-still-secret-91aa"
    with city_broker(tmp_path / "broker", pki, passwords={gw: PASSWORD}) as broker:
        _mk(tmp_path / "gw")
        config = password_gateway(tmp_path / "gw", pki, gw, broker.password_port, password=wrong)
        agent = Agent(config, ManualClock(T0))
        with logged("edge_agent.transports.mqtt", "link down", times=2) as link_down:
            task = asyncio.create_task(agent.run())
            try:
                await asyncio.wait_for(link_down.wait(), 20)
                assert agent.south is not None
                assert agent.south.connects == 0
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    text = logged_text(full_logging)
    assert "link down" in text  # the refusal itself was logged
    assert wrong not in text
    assert PASSWORD not in text


async def test_invalid_enum_value_is_not_echoed_into_logs(
    tmp_path: Path, pki: Pki, gateways: tuple[str, str], full_logging: pytest.LogCaptureFixture
) -> None:
    gw = gateways[0]
    root = f"district/v1/{gw}"
    with (
        city_broker(tmp_path / "broker", pki, passwords={gw: PASSWORD}) as broker,
        shipped_layout(tmp_path, pki, gw, broker, north_password=PASSWORD) as (config, village),
    ):
        async with running(config, ManualClock(T0)) as agent:
            async with village.client("W1") as hub:
                bad = msgspec.json.encode({"v": 1, "event": f"fall, {RESIDENT}, bed 2"})
                await hub.publish(f"{root}/wearable/W1/event", bad, qos=1)
            await sos_round_trip(broker, village, pki, gw)  # handled after the bad one
            assert agent.stats.rejected == {"schema": 1}
    assert RESIDENT not in logged_text(full_logging)


def _mk(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
