"""The centre's file, ``centre.toml``, validated once into frozen typed objects.

Owns: ``CentreFile`` (the sections below), ``load_centre_config`` (ConfigError listing every
problem with its key path), and the MQTT ``LinkSettings`` the centre's link uses
(``link_settings``: the same broker grammar as a gateway's ``[north]``: ``mqtt://`` on
loopback, ``mqtts://`` with ``[broker.tls]`` elsewhere, a ``password_file``).

```toml
[centre]
district = "naxi"              # gateways of this district: district/v1/<gateway>/...
[broker]
url = "mqtts://city.example:8883"
username = "centre"
password_file = "secrets/centre.password"
shared_group = ""              # "centre": subscribe as $share/centre/... (several processes split the load)
[broker.tls]
ca = "pki/ca.pem"
[database]
url = "sqlite:///var/centre/centre.db"   # or postgresql://centre@db.example/centre
[console]
listen = "127.0.0.1:8090"
[retention]
raw_days = 14
[rollout]
gateway_timeout = "10m"
```
Must not import: the service, the console, the rollout (they read the config).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import msgspec

from edge_agent.config.schema import BrokerSettings
from edge_agent.errors import ConfigError, Problem
from edge_agent.loopback import is_loopback
from edge_agent.policy.units import parse_duration
from edge_agent.transports.mqtt_settings import LinkSettings

Name = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]

TOPIC_ROOT = "district/v1"


class CentreSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    district: Name = "naxi"
    id: Name = "centre"  # the MQTT client id (one per process; two processes need two ids)


class CentreBroker(BrokerSettings, frozen=True, forbid_unknown_fields=True, kw_only=True):
    url: str = "mqtt://127.0.0.1:1883"
    username: str | None = "centre"
    shared_group: str = ""  # MQTT 5 shared subscription group: "" subscribes alone


class DatabaseSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    url: str = "sqlite:///var/centre/centre.db"  # a relative sqlite path is relative to centre.toml


class ConsoleSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    listen: str = "127.0.0.1:8090"
    session_hours: Annotated[float, msgspec.Meta(gt=0, le=24 * 30)] = 12.0
    # the console's address as operators type it (links in messages); default http://<listen>
    public_url: str | None = None


class RetentionSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    raw_days: Annotated[float, msgspec.Meta(gt=0)] = 14.0  # raw telemetry; hourly roll-ups are kept


class RolloutSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    gateway_timeout: str = "10m"  # a gateway that has not confirmed by then is TIMED_OUT


class CentreFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    centre: CentreSection = CentreSection()
    broker: CentreBroker = CentreBroker()
    database: DatabaseSection = DatabaseSection()
    console: ConsoleSection = ConsoleSection()
    retention: RetentionSection = RetentionSection()
    rollout: RolloutSection = RolloutSection()


@dataclass(frozen=True)
class CentreConfig:
    path: Path
    file: CentreFile

    @property
    def database_url(self) -> str:
        """The database URL, a relative SQLite path resolved against the file's folder."""
        url = self.file.database.url
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url[len(prefix) :].startswith("/"):
            return prefix + str((self.path.parent / url[len(prefix) :]).resolve())
        return url

    @property
    def gateway_timeout(self) -> float:
        return parse_duration(self.file.rollout.gateway_timeout)

    def relative(self, name: str) -> Path:
        return self.path.parent / name


def load_centre_config(path: str | Path) -> CentreConfig:
    """Read and validate ``centre.toml``; every problem in one ConfigError."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError([Problem(str(path), "", f"cannot read it: {exc.strerror}")]) from None
    try:
        file = msgspec.toml.decode(raw, type=CentreFile)
    except msgspec.ValidationError as exc:
        raise ConfigError([Problem(str(path), "", str(exc))]) from None
    except msgspec.DecodeError as exc:
        raise ConfigError([Problem(str(path), "", f"not valid TOML: {exc}")]) from None
    config = CentreConfig(path, file)
    problems = []
    try:
        parse_duration(file.rollout.gateway_timeout)
    except ValueError as exc:
        problems.append(Problem(str(path), "rollout.gateway_timeout", str(exc)))
    scheme = urlsplit(file.broker.url).scheme
    if scheme not in ("mqtt", "mqtts"):
        problems.append(Problem(str(path), "broker.url", f"{file.broker.url!r}: expected mqtt://host:port or mqtts://"))
    db = file.database.url
    if not db.startswith(("sqlite:///", "postgresql://", "postgres://")):
        problems.append(Problem(str(path), "database.url", f"{db!r}: expected sqlite:///path or postgresql://..."))
    if problems:
        raise ConfigError(problems)
    return config


def link_settings(config: CentreConfig, *, client_id: str | None = None) -> LinkSettings:
    """The MQTT link's settings: TLS from ``[broker.tls]`` (required off loopback), the password file."""
    broker = config.file.broker
    parts = urlsplit(broker.url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
    source = str(config.path)
    tls: ssl.SSLContext | None = None
    if broker.tls is not None:
        tls = ssl.create_default_context(cafile=str(config.relative(broker.tls.ca)))
        if broker.tls.cert is not None:
            key = str(config.relative(broker.tls.key)) if broker.tls.key else None
            tls.load_cert_chain(str(config.relative(broker.tls.cert)), key)
    elif parts.scheme == "mqtts":
        tls = ssl.create_default_context()
    elif not is_loopback(host) and not broker.allow_plaintext_remote:
        raise ConfigError(
            [
                Problem(
                    source,
                    "broker.url",
                    f"plaintext MQTT to non-loopback host {host!r} is refused; add [broker.tls]",
                )
            ]
        )
    password = broker.password
    if broker.password_file is not None:
        try:
            lines = config.relative(broker.password_file).read_text().splitlines()
        except OSError as exc:
            raise ConfigError([Problem(source, "broker.password_file", f"cannot read it: {exc.strerror}")]) from None
        password = lines[0] if lines else ""
    return LinkSettings(
        host=host,
        port=port,
        client_id=client_id or config.file.centre.id,
        username=broker.username,
        password=password,
        tls=tls,
        keepalive=broker.keepalive,
        reconnect_min=broker.reconnect_min,
        reconnect_max=broker.reconnect_max,
        protocol=broker.protocol,
        session_expiry=broker.session_expiry,
        receive_maximum=2000,
        max_queued_incoming=20_000,
    )
