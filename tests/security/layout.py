"""A gateway on the shipped layout for the security tests: its file, its policy, its secrets.

The gateway file points the south link at the village broker's loopback listener (user = the
gateway id, with a password) and, when there is an uplink, the north link at the city broker
over mutual TLS (certificate CN = the gateway id), as examples/street-cabinet.toml does.
"""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path
from typing import Any

from devtools.gateway_config import write_gateway_config
from edge_agent.cli.acl import south_users
from edge_agent.config import GatewayConfig, load_config
from edge_agent.policy.bundle_sign import build_bundle, sign_bundle
from edge_agent.policy.keys import generate_private_key, key_id, public_key_to_pem
from tests.agent.harness import T0
from tests.security.city import Pki

POLICY = """
[policy]
name = "{name}"

[programs.village]
on = "sunset+10m"
off = "sunrise-15m"
level = {level}

[assign]
default = "village"

[chains.medical]
roles = ["village_doctor"]
ack_timeout = "2m"

[[rules]]
id = "sos"
when = {{ trigger = "event", event = "sos", kind = "wearable" }}
then = [ {{ action = "alert", priority = 1, message = "SOS from {{device}}", notify = "medical" }} ]

[[rules]]
id = "low-battery"
when = {{ trigger = "event", event = "vitals", kind = "wearable" }}
if = "battery < 15"
then = [ {{ action = "publish", topic = "wearable/low-battery" }} ]
"""

NO_UPLINK: dict[str, Any] = {"url": "none"}


def uplink(mtls_port: int) -> dict[str, Any]:
    """The ``[north]`` table of a gateway on the city broker's mutual-TLS listener."""
    return {
        "url": f"mqtts://127.0.0.1:{mtls_port}",
        "reconnect_min": 0.2,
        "reconnect_max": 1.0,
        "tls": {"ca": "tls/district-ca.crt", "cert": "tls/gateway.crt", "key": "tls/gateway.key"},
    }


def policy_text(name: str = "layout-test", level: int = 80) -> str:
    return POLICY.format(name=name, level=level)


def write_gateway(directory: Path, pki: Pki, gw: str, south_port: int, north: dict[str, Any] = NO_UPLINK) -> Gateway:
    """gateway.toml, policy.toml, centre.pub (the key that signs bundles) and tls/ in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    creds = pki.client(gw)
    tls = directory / "tls"
    tls.mkdir(exist_ok=True)
    shutil.copyfile(creds.ca, tls / "district-ca.crt")
    shutil.copyfile(creds.cert, tls / "gateway.crt")
    shutil.copyfile(creds.key, tls / "gateway.key")
    signer = generate_private_key()
    (directory / "centre.pub").write_bytes(public_key_to_pem(signer.public_key()))
    password = secrets.token_urlsafe(18)
    path = write_gateway_config(
        directory,
        gw,
        policy_text=policy_text(),
        south_url=f"mqtt://127.0.0.1:{south_port}",
        south={"username": gw, "password": password, "reconnect_min": 0.2, "reconnect_max": 1.0},
        north_url=north["url"],
        north=north,
        trust_keys=["centre.pub"],
        lamps=[{"id": lamp, "group": "village", "zone": "square"} for lamp in ("L1", "L2")],
        cameras=[{"id": "C1", "zone": "square"}],
        wearables=[{"id": "W1", "zone": "lane"}, {"id": "W2", "zone": "square"}],
        responders=[{"id": doctor, "role": "village_doctor"} for doctor in ("doc1", "doc2")],
    )
    config = load_config(path)
    return Gateway(config, signer, password)


class Gateway:
    """A written gateway: its config, the centre's signing key, the south password of every user."""

    def __init__(self, config: GatewayConfig, signer: Any, password: str) -> None:
        self.config = config
        self.signer = signer
        self.passwords = {user.name: secrets.token_urlsafe(18) for user in south_users(config)}
        self.passwords[config.id] = password

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def root(self) -> str:
        return f"district/v1/{self.config.id}"

    def bundle(self, version: int, name: str = "layout-test-v2", level: int = 60) -> bytes:
        """A policy bundle for this gateway signed by the centre's key it trusts."""
        bundle = build_bundle(
            policy_text(name, level).encode(),
            kind="policy",
            district=self.config.file.gateway.district,
            gateways=[self.id],
            version=version,
            issued_at=int(T0 - 60),
            not_before=int(T0 - 60),
            expires=int(T0 + 30 * 86400),
            key_id=key_id(self.signer.public_key()),
            force=True,
        )
        signed: bytes = sign_bundle(bundle, self.signer)
        return signed
