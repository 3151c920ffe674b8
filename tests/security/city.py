"""The city broker for the security tests: the real deploy/mosquitto files on loopback ports.

Owns: a throw-away district PKI made with trustme (server certificate for 127.0.0.1 and
localhost, client certificates whose CN is the gateway id or ``centre``, an expired one and
one from a rogue CA) and a Mosquitto child process started from ``deploy/mosquitto/
mosquitto.conf`` and ``deploy/mosquitto/acl``. The config is templated for paths and ports
only (each substitution must hit, so the test notices when the deploy file drifts); the ACL
is copied byte for byte. Never binds anything but 127.0.0.1 and never touches port 1883.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import shutil
import socket
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
import trustme

from devtools.mosquitto import Listener, MosquittoProcess, deploy_config, write_password_file

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy" / "mosquitto"
PROD_CONF = DEPLOY / "mosquitto.conf"
PROD_ACL = DEPLOY / "acl"
CENTRE = "centre"
HOST = "127.0.0.1"


@dataclass(frozen=True)
class Credentials:
    """PEM files a client presents: the CA it trusts, its certificate and its key."""

    ca: Path
    cert: Path
    key: Path

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        ctx.load_cert_chain(str(self.cert), str(self.key))
        return ctx


@dataclass
class Pki:
    """The district CA (trustme), a rogue CA, and client certificates issued on demand."""

    directory: Path
    ca: trustme.CA = field(default_factory=trustme.CA)
    rogue: trustme.CA = field(default_factory=trustme.CA)

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.ca_pem = self.directory / "district-ca.crt"
        self.ca.cert_pem.write_to_path(str(self.ca_pem))
        server = self.ca.issue_cert("127.0.0.1", "localhost", common_name="city-broker")
        self.server_cert = self.directory / "broker.crt"
        self.server_key = self.directory / "broker.key"
        server.cert_chain_pems[0].write_to_path(str(self.server_cert))
        server.private_key_pem.write_to_path(str(self.server_key))
        os.chmod(self.server_key, 0o600)

    def client(self, name: str, *, expired: bool = False, rogue: bool = False) -> Credentials:
        """A client certificate whose CN is ``name`` (a gateway id or ``centre``)."""
        tag = "-expired" if expired else "-rogue" if rogue else ""
        cert, key = self.directory / f"{name}{tag}.crt", self.directory / f"{name}{tag}.key"
        if not cert.exists():
            issuer = self.rogue if rogue else self.ca
            now = dt.datetime.now(dt.UTC)
            window = {"not_before": now - dt.timedelta(days=30), "not_after": now - dt.timedelta(days=1)}
            leaf = issuer.issue_cert(
                f"{name}.gateways.district.invalid", common_name=name, **(window if expired else {})
            )
            leaf.cert_chain_pems[0].write_to_path(str(cert))
            leaf.private_key_pem.write_to_path(str(key))
            os.chmod(key, 0o600)
        return Credentials(self.ca_pem, cert, key)


def template_config(text: str, workdir: Path, mtls_port: int, password_port: int) -> str:
    """The production config run from ``workdir``, its listeners on loopback."""
    listeners = {
        "listener 8883\n": f"listener {mtls_port} {HOST}\n",
        "listener 8884\n": f"listener {password_port} {HOST}\n",
    }
    return deploy_config(text, workdir, "mosquitto.conf", listeners)


class CityBroker(MosquittoProcess):
    """Mosquitto running the deploy config: ``mtls_port`` (8883) and ``password_port`` (8884)."""

    def __init__(
        self, workdir: Path, pki: Pki, passwords: dict[str, str] | None = None, extra_config: str = ""
    ) -> None:
        super().__init__(
            listeners=[Listener(), Listener()],  # two distinct free loopback ports, kept across restarts
            workdir=workdir,
            log_file=workdir / "mosquitto.log",  # where the deploy config logs (shown on a failed start)
            extra_config=extra_config,  # appended verbatim, e.g. an explicit admin listener
            config=self._deploy_config,
        )
        self.pki = pki
        self.passwords = dict(passwords or {})

    @property
    def mtls_port(self) -> int:
        return self.ports[0]

    @property
    def password_port(self) -> int:
        return self.ports[1]

    def _deploy_config(self, _: MosquittoProcess) -> str:
        """Certificates, ACL and password file into the work dir; the templated deploy config."""
        certs = self.workdir / "certs"
        certs.mkdir(parents=True, exist_ok=True)
        (self.workdir / "data").mkdir(exist_ok=True)
        shutil.copyfile(self.pki.ca_pem, certs / "district-ca.crt")
        shutil.copyfile(self.pki.server_cert, certs / "broker.crt")
        shutil.copyfile(self.pki.server_key, certs / "broker.key")
        shutil.copyfile(PROD_ACL, self.workdir / "acl")
        write_password_file(self.workdir / "passwd", self.passwords)
        for private in (certs / "broker.key", self.workdir / "acl"):
            os.chmod(private, 0o600)
        return template_config(PROD_CONF.read_text(), self.workdir, self.mtls_port, self.password_port)

    def start(self, timeout: float = 15.0) -> CityBroker:
        super().start(timeout)
        return self

    def client(
        self,
        credentials: Credentials | None,
        *,
        port: int | None = None,
        identifier: str | None = None,
        username: str | None = None,
        password: str | None = None,
        tls: ssl.SSLContext | None = None,
        timeout: float = 10.0,
        clean_session: bool | None = None,
    ) -> aiomqtt.Client:
        """An aiomqtt client for this broker (mTLS port unless ``port`` says otherwise)."""
        context = tls if tls is not None else credentials.context() if credentials is not None else None
        return aiomqtt.Client(
            HOST,
            port or self.mtls_port,
            identifier=identifier,
            username=username,
            password=password,
            tls_context=context,
            timeout=timeout,
            keepalive=10,
            clean_session=clean_session,
        )


@contextlib.contextmanager
def city_broker(
    workdir: Path, pki: Pki, passwords: dict[str, str] | None = None, extra_config: str = ""
) -> Iterator[CityBroker]:
    broker = CityBroker(workdir, pki, passwords, extra_config).start()
    try:
        yield broker
    finally:
        broker.stop()


def listeners(conf_text: str) -> list[dict[str, str]]:
    """Parse a mosquitto.conf into its listener blocks (option -> value), in file order.

    Options before the first ``listener`` line that would open the implicit default listener
    (``port``, ``bind_address``) are reported as a listener of their own.
    """
    blocks: list[dict[str, str]] = []
    implicit: dict[str, str] = {}
    current: dict[str, str] | None = None
    for raw in conf_text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        if key == "listener":
            current = {"listener": value.strip()}
            blocks.append(current)
        elif current is not None:
            current[key] = value.strip()
        elif key in ("port", "bind_address"):
            implicit[key] = value.strip()
    if implicit:
        blocks.insert(0, {"listener": implicit.get("port", "1883"), **implicit})
    return blocks


def global_options(conf_text: str) -> dict[str, str]:
    """Options set before the first listener (the broker-wide ones)."""
    options: dict[str, str] = {}
    for raw in conf_text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        if key == "listener":
            break
        options[key] = value.strip()
    return options


@dataclass(frozen=True)
class Probe:
    """What a bare MQTT CONNECT got: a CONNACK return code, or how the connection ended."""

    connack: int | None  # 0 accepted, 4 bad user name or password, 5 not authorised
    error: str = ""

    @property
    def accepted(self) -> bool:
        return self.connack == 0


def _connect_packet(client_id: str, username: str | None, password: str | None) -> bytes:
    def text(value: str) -> bytes:
        data = value.encode()
        return len(data).to_bytes(2, "big") + data

    flags = 0x02 | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    body = text("MQTT") + bytes([4, flags]) + (10).to_bytes(2, "big") + text(client_id)
    if username is not None:
        body += text(username)
    if password is not None:
        body += text(password)
    assert len(body) < 128  # one-byte remaining length is all a probe needs
    return bytes([0x10, len(body)]) + body


def probe(
    port: int,
    tls: ssl.SSLContext | None,
    *,
    username: str | None = None,
    password: str | None = None,
    timeout: float = 10.0,
) -> Probe:
    """Open a socket (TLS when ``tls``), send one MQTT 3.1.1 CONNECT, read the answer.

    Fast and exact where a full client would only time out: a refused TLS handshake shows up
    as the broker's TLS alert (certificate required, unknown CA, certificate expired).
    """
    client_id = f"probe-{os.getpid()}-{time.monotonic_ns()}"
    try:
        with contextlib.ExitStack() as stack:
            conn = stack.enter_context(socket.create_connection((HOST, port), timeout=timeout))
            if tls is not None:
                conn = stack.enter_context(tls.wrap_socket(conn, server_hostname=HOST))
            conn.sendall(_connect_packet(client_id, username, password))
            answer = b""
            while len(answer) < 4:
                chunk = conn.recv(4 - len(answer))
                if not chunk:
                    return Probe(None, "connection closed before CONNACK")
                answer += chunk
    except ssl.SSLError as exc:
        return Probe(None, f"TLS: {exc.reason or exc}")
    except OSError as exc:
        return Probe(None, f"socket: {exc}")
    if answer[0] != 0x20:
        return Probe(None, f"not a CONNACK: {answer!r}")
    return Probe(answer[3])


@dataclass
class Inbox:
    """Every message one client received, in arrival order; awaitable by topic."""

    messages: list[tuple[str, bytes]] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def topics(self) -> list[str]:
        return [topic for topic, _ in self.messages]

    def payloads(self, topic: str) -> list[bytes]:
        return [payload for seen, payload in self.messages if seen == topic]

    async def wait_for(self, topic: str, timeout: float = 15.0) -> bytes:
        """The first payload seen on ``topic`` (waiting for it up to ``timeout`` seconds)."""

        async def arrival() -> bytes:
            while True:
                for seen, payload in self.messages:
                    if seen == topic:
                        return payload
                self._changed.clear()
                await self._changed.wait()

        try:
            return await asyncio.wait_for(arrival(), timeout)
        except TimeoutError:
            raise AssertionError(f"nothing on {topic} within {timeout}s; saw {self.topics()}") from None


@contextlib.asynccontextmanager
async def receiving(client: aiomqtt.Client) -> AsyncIterator[Inbox]:
    """Collect what ``client`` (already connected and subscribed, or about to be) receives."""
    inbox = Inbox()

    async def pump() -> None:
        async for message in client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
            inbox.messages.append((str(message.topic), payload))
            inbox._changed.set()

    task = asyncio.create_task(pump())
    try:
        yield inbox
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
