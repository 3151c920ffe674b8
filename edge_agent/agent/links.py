"""Broker addresses and link settings for a gateway's south and north MQTT links.

Owns: ``MqttLinks``, the agent's default ``LinkFactory`` (MQTT links to the configured
brokers, the embedded amqtt broker started for a url of ``embedded``); turning a
``[south]``/``[north]`` table into ``LinkSettings``: TLS context from the configured CA,
certificate and key; refusal of plaintext to a non-loopback broker unless explicitly allowed;
last will and birth message on the gateway's ``status`` topic; the MQTT version (5 unless
configured otherwise; 3.1.1 for the embedded amqtt broker, which speaks nothing else) and the
persistent session's expiry; how an inbound message the agent could not store comes back (the
broker's redelivery, or a local retry with amqtt, which never redelivers).
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit

from edge_agent.agent import topics
from edge_agent.config import GatewayConfig
from edge_agent.config.schema import BrokerSettings
from edge_agent.errors import ConfigError, Problem
from edge_agent.loopback import is_loopback
from edge_agent.transports.broker import EmbeddedBroker
from edge_agent.transports.link import LinkSpec, ServedLink
from edge_agent.transports.mqtt import MqttLink
from edge_agent.transports.mqtt_settings import RECEIVE_MAXIMUM, LinkSettings


def link_settings(
    config: GatewayConfig,
    which: str,
    broker: BrokerSettings,
    host: str,
    port: int,
    *,
    embedded: bool | None = None,
) -> LinkSettings:
    """``embedded``: the link goes to the in-process amqtt broker (default: the table's url
    says ``embedded``); pass it when the url was overridden."""
    tls_context: ssl.SSLContext | None = None
    if broker.tls is not None:
        base = config.path.parent
        try:
            tls_context = ssl.create_default_context(cafile=str(base / broker.tls.ca))
            if broker.tls.cert:
                key = str(base / broker.tls.key) if broker.tls.key else None
                tls_context.load_cert_chain(str(base / broker.tls.cert), key)
        except (OSError, ssl.SSLError) as exc:  # missing file, bad PEM, key not matching the cert
            raise ConfigError(
                [Problem(str(config.path), f"{which}.tls", f"cannot load CA/certificate/key: {exc}")]
            ) from None
    elif broker.url.startswith("mqtts://"):  # mqtts:// means TLS even without a [tls] table
        tls_context = ssl.create_default_context()  # the system's trust store, host name checked
    elif not is_loopback(host) and not broker.allow_plaintext_remote:
        raise ConfigError(
            [
                Problem(
                    str(config.path),
                    f"{which}.url",
                    f"plaintext MQTT to non-loopback host {host!r} is refused; "
                    "add [" + which + ".tls] or set allow_plaintext_remote = true",
                )
            ]
        )
    password = broker.password
    if broker.password_file is not None:
        try:
            lines = (config.path.parent / broker.password_file).read_text().splitlines()
        except OSError as exc:
            raise ConfigError(
                [Problem(str(config.path), f"{which}.password_file", f"cannot read it: {exc.strerror}")]
            ) from None
        password = lines[0] if lines else ""
    status = topics.status(config.id)
    if embedded is None:
        embedded = broker.url == "embedded"
    return LinkSettings(
        host=host,
        port=port,
        client_id=f"{config.id}-{which}",
        username=broker.username,
        password=password,
        tls=tls_context,
        keepalive=broker.keepalive,
        reconnect_min=broker.reconnect_min,
        reconnect_max=broker.reconnect_max,
        will=(status, b"offline"),
        birth=(status, b"online"),
        # a QoS 1 burst is held in flight (up to RECEIVE_MAXIMUM, not in the broker's queue,
        # which drops what does not fit), with room for max_queued_messages more (QoS 0)
        max_queued_incoming=RECEIVE_MAXIMUM + config.file.limits.max_queued_messages,
        receive_maximum=RECEIVE_MAXIMUM,
        protocol="3.1.1" if embedded else broker.protocol,
        # amqtt drops a QoS 1 message left unacknowledged (5 s, or at a disconnect) instead of
        # delivering it again on the resumed session: the link keeps it and retries it itself
        unhandled="retry" if embedded else "redeliver",
        session_expiry=broker.session_expiry,
    )


def parse_url(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    default = 8883 if parts.scheme == "mqtts" else 1883
    return parts.hostname or "127.0.0.1", parts.port or default


class MqttLinks:
    """The agent's links as MQTT connections: south to ``south_url``, north to ``north_url``
    ("embedded": the in-process amqtt broker, started for the run; a north url of "embedded"
    goes to the south broker)."""

    def __init__(self, config: GatewayConfig, south_url: str, north_url: str) -> None:
        self.config = config
        self.south_url = south_url
        self.north_url = north_url
        self.broker: EmbeddedBroker | None = None  # while a run has it started

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[Callable[[LinkSpec], ServedLink]]:
        async with contextlib.AsyncExitStack() as stack:
            if self.south_url == "embedded":
                self.broker = await stack.enter_async_context(EmbeddedBroker())
                south = self.broker.host, self.broker.port
            else:
                south = parse_url(self.south_url)
            file = self.config.file

            def make(spec: LinkSpec) -> ServedLink:
                if spec.name == "south":
                    (host, port), broker = south, file.south
                else:
                    (host, port), broker = (
                        south if self.north_url == "embedded" else parse_url(self.north_url),
                        file.north,
                    )
                link = MqttLink(
                    spec.name,
                    link_settings(self.config, spec.name, broker, host, port),
                    spec.subscriptions,
                    spec.on_message,
                    on_connect=spec.on_connect,
                    commit=spec.commit,
                )
                link.on_published = spec.on_published
                return link

            yield make

    def _north_address(self, south: tuple[str, int]) -> tuple[str, int]:
        return south if self.north_url == "embedded" else parse_url(self.north_url)
