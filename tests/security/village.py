"""The village (south) broker for the security tests: deploy/mosquitto/south.conf with the ACL
the generator makes for a test gateway, on loopback ports; and MQTT 5 clients that report the
broker's verdict on each publish (PUBACK reason code: 0 delivered, 0x87 not authorised).

The config is templated for paths, ports and the account to run as only (each substitution
must hit, so the test notices when the deploy file drifts); the ACL is
``edge_agent.cli.acl.south_acl(config)`` byte for byte; the password file is made with
``mosquitto_passwd``. Both listeners are rebound to 127.0.0.1 on free ports (never 1883).
Started through the shared launcher (devtools.mosquitto), which keeps the ports and the
persistence directory across a ``kill -9`` and restart.
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

import aiomqtt

from devtools.mosquitto import Listener, MosquittoProcess, deploy_config
from edge_agent.cli.acl import south_acl
from edge_agent.config import GatewayConfig
from tests.security.city import DEPLOY, HOST, Pki

SOUTH_CONF = DEPLOY / "south.conf"
NOT_AUTHORISED = 0x87  # MQTT 5 reason code of a publish the ACL denies
TAKEN = 0  # ...of a publish the broker took (0x10 "no matching subscribers" is taken too)
NO_SUBSCRIBERS = 0x10


def template_south(text: str, workdir: Path, local_port: int, lan_port: int) -> str:
    """The shipped south config run from ``workdir``; the LAN listener here on loopback."""
    listeners = {
        "listener 1883 127.0.0.1\n": f"listener {local_port} {HOST}\n",
        "listener 8883\n": f"listener {lan_port} {HOST}\n",
    }
    return deploy_config(text, workdir, "south.conf", listeners)


class VillageBroker:
    """south.conf on two loopback ports: ``local_port`` (1883, the agent) and ``lan_port``
    (8883, TLS, devices); the ports are known before it starts."""

    def __init__(self, workdir: Path, pki: Pki) -> None:
        self.workdir = workdir
        self.pki = pki
        self.passwords: dict[str, str] = {}
        self.acl = ""
        workdir.mkdir(parents=True, exist_ok=True)
        # the ports are chosen here, so a gateway file can name them before the broker starts
        self.process = MosquittoProcess(listeners=[Listener(), Listener()], config=self._config_text, workdir=workdir)
        self._files_written = False

    @property
    def local_port(self) -> int:
        return self.process.ports[0]

    @property
    def lan_port(self) -> int:
        return self.process.ports[1]

    def _config_text(self, process: MosquittoProcess) -> str:
        if not self._files_written:
            self._write_files()
        return template_south(SOUTH_CONF.read_text(), self.workdir, self.local_port, self.lan_port)

    def _write_files(self) -> None:
        certs = self.workdir / "certs"
        certs.mkdir(parents=True, exist_ok=True)
        (self.workdir / "data").mkdir(exist_ok=True)
        shutil.copyfile(self.pki.ca_pem, certs / "district-ca.crt")
        shutil.copyfile(self.pki.server_cert, certs / "broker.crt")
        shutil.copyfile(self.pki.server_key, certs / "broker.key")
        (self.workdir / "acl").write_text(self.acl)
        passwd = self.workdir / "passwd"
        passwd.write_text("")
        tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
        for user, password in self.passwords.items():
            subprocess.run([tool, "-b", str(passwd), user, password], check=True, capture_output=True)
        for private in (certs / "broker.key", self.workdir / "acl", passwd):
            os.chmod(private, 0o600)
        self._files_written = True

    def start(self, config: GatewayConfig, passwords: dict[str, str]) -> VillageBroker:
        """Start with the ACL generated for ``config`` (the gateway whose village this is) and a
        password file holding ``passwords`` (user -> password)."""
        self.acl = south_acl(config)
        self.passwords = dict(passwords)
        try:
            self.process.start(timeout=15)
        except Exception as exc:
            raise RuntimeError(f"{exc}: {self.log()}") from None
        return self

    def kill_and_restart(self) -> None:
        """kill -9 (no final save: only what autosave wrote survives), then start again."""
        self.process.restart(kill=True, timeout=15)

    def stop(self) -> None:
        self.process.stop()

    def log(self) -> str:
        path = self.workdir / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def client(
        self,
        user: str,
        *,
        lan: bool = True,
        password: str | None = None,
        identifier: str | None = None,
        version5: bool = True,
        clean: bool = True,
    ) -> aiomqtt.Client:
        """A client logged in as ``user``: on the LAN listener (TLS) by default, else loopback."""
        tls = ssl.create_default_context(cafile=str(self.pki.ca_pem)) if lan else None
        return mqtt_client(
            self.lan_port if lan else self.local_port,
            tls,
            username=user,
            password=password if password is not None else self.passwords[user],
            identifier=identifier,
            version5=version5,
            clean=clean,
        )


def mqtt_client(
    port: int,
    tls: ssl.SSLContext | None,
    *,
    username: str | None = None,
    password: str | None = None,
    identifier: str | None = None,
    version5: bool = True,
    clean: bool = True,
) -> aiomqtt.Client:
    """An aiomqtt client on loopback; MQTT 5 by default, so that a denied publish is visible."""
    options: dict[str, Any] = {}
    if version5:
        options["protocol"] = aiomqtt.ProtocolVersion.V5
        options["clean_start"] = clean
    else:
        options["clean_session"] = clean
    return aiomqtt.Client(
        HOST,
        port,
        identifier=identifier,
        username=username,
        password=password,
        tls_context=tls,
        timeout=10,
        keepalive=10,
        **options,
    )


async def publish_code(client: aiomqtt.Client, topic: str, payload: bytes, *, retain: bool = False) -> int:
    """Publish at QoS 1 and return the PUBACK's reason code (MQTT 5): 0 taken, 0x87 denied;
    0x10 (taken, but nobody subscribed) is returned as 0: for an ACL both mean "granted".

    aiomqtt drops the code, so the paho client under it is wrapped once per client; publishes
    through this function are awaited one at a time, so the last message id is this one's.
    """
    paho: Any = client._client
    state: dict[str, Any] | None = getattr(paho, "_security_test_acks", None)
    if state is None:
        state = {"codes": {}, "mids": []}
        forward_ack = paho.on_publish
        real_publish = paho.publish

        def on_publish(c: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
            state["codes"][mid] = int(getattr(reason_code, "value", reason_code))
            if forward_ack is not None:
                forward_ack(c, userdata, mid, reason_code, properties)

        def publish(*args: Any, **kwargs: Any) -> Any:
            info = real_publish(*args, **kwargs)
            state["mids"].append(info.mid)
            return info

        paho.on_publish = on_publish
        paho.publish = publish
        paho._security_test_acks = state
    await client.publish(topic, payload, qos=1, retain=retain)
    code: int = state["codes"].pop(state["mids"][-1])
    return TAKEN if code == NO_SUBSCRIBERS else code
