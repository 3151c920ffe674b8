"""The chaos suite's actors: the gateway process, the city platform, the wearable hub, brokers.

Owns: ``AgentProcess`` (`edge-agent run` as a child we can kill -9), ``Platform`` (the city on
the north broker as user "centre": a persistent QoS 1 session and a ``Receiver``), ``Hub``
(the example's wearables and lamps publishing on the south broker, each as its own user; "sent"
is what the south broker acknowledged; the centre's view of the gateway's status and alarms),
``Layout`` (the shipped layout of one scenario: examples/village-gateway.toml with only what a
deployment changes, the village broker from deploy/mosquitto/south.conf with the generated ACL
and a password per user, the city broker from deploy/mosquitto/mosquitto.conf with the shipped
ACL: ``LAYOUT_NOTES`` says where the rig departs from it), the publishing stream, SQLite probes
and the wait helpers. Loopback only; every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import shutil
import signal
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import IO, Any

from devtools.gateway_config import toml_dumps
from devtools.mosquitto import Listener, MosquittoProcess, deploy_config, write_password_file
from edge_agent.cli.acl import CENTRE, south_acl, south_users
from edge_agent.config import load_config

ROOT = Path(__file__).resolve().parents[2]
# The shipped layout every row runs on (docs/DEPLOY.md): the example gateway file, the village
# broker's config, the city broker's config and its generated ACL.
EXAMPLE = ROOT / "examples" / "village-gateway.toml"
SOUTH_CONF = ROOT / "deploy" / "mosquitto" / "south.conf"
CITY_CONF = ROOT / "deploy" / "mosquitto" / "mosquitto.conf"
CITY_ACL = ROOT / "deploy" / "mosquitto" / "acl"
_EXAMPLE: dict[str, Any] = tomllib.loads(EXAMPLE.read_text())
GW = str(_EXAMPLE["gateway"]["id"])
TOPIC_ROOT = f"district/v1/{GW}"
SOS_MESSAGE = re.compile(r"^SOS (\d+) from (\S+)$")
# the example's MQTT wearables and lamps (those on a dongle or an RS-485 bus have no broker user)
WEARABLES = tuple(str(w["id"]) for w in _EXAMPLE.get("wearables", []) if w.get("link", "mqtt") == "mqtt")
LAMPS = tuple(str(lamp["id"]) for lamp in _EXAMPLE.get("lamps", []) if lamp.get("bus") is None)

# The SOS seq is visible in the alert, so each north alert maps back to one SOS. (The shipped
# policy, naxi-standard, says "{event} from {device}": no way to tell two SOS of one wearable
# apart on the platform; this is the one deliberate departure from the shipped gateway file.)
POLICY = """
[policy]
name = "chaos"

[programs.village]
on = "sunset+10m"
off = "sunrise-15m"
level = 80

[assign]
default = "village"

[[rules]]
id = "sos"
when = { trigger = "event", event = "sos", kind = "wearable" }
then = [ { action = "alert", priority = 1, message = "SOS {seq} from {device}" } ]
"""
# every row's notes start with these: what differs from the shipped layout in all rows
LAYOUT_NOTES = (
    "layout: examples/village-gateway.toml (data_dir, south port, password_file, north url changed)",
    "policy: chaos SOS rule (seq in the message) instead of naxi-standard",
    "south: deploy/mosquitto/south.conf + generated ACL, devices on the TLS LAN listener",
    "north: shipped city conf + shipped ACL, password auth on one plain listener instead of mTLS",
)

Key = tuple[Any, ...]  # ("sos", device, seq) or ("tel", marker) (("tel", marker, lamp) when published)


def template_south(text: str, work: Path, local_port: int, lan_port: int) -> str:
    """deploy/mosquitto/south.conf run from ``work``, both listeners on loopback."""
    listeners = {
        "listener 1883 127.0.0.1\n": f"listener {local_port} 127.0.0.1\n",
        "listener 8883\n": f"listener {lan_port} 127.0.0.1\n",
    }
    return deploy_config(text, work, "south.conf", listeners)


def template_city(text: str, work: Path, port: int, *, persistence: bool) -> str:
    """deploy/mosquitto/mosquitto.conf's global part (paths and account rewritten, persistence
    as the row asks), then one plain loopback listener with the shipped ACL and a password file
    in place of the two mutual-TLS listeners: the FlakyProxy rows read MQTT packets, which TLS
    would hide."""
    head = text[: text.index("# --- 8883")]
    persist = {"persistence true\n": f"persistence {'true' if persistence else 'false'}\n"}
    head = deploy_config(head, work, "mosquitto.conf", persist, all_paths=False)
    return head + (
        "# --- chaos: plain loopback listener, password + shipped ACL (instead of mTLS) ---\n"
        f"listener {port} 127.0.0.1\nprotocol mqtt\npassword_file {work / 'passwd'}\n"
        f"allow_anonymous false\nacl_file {work / 'acl'}\n"
    )


class Layout:
    """The shipped deployment of one scenario on loopback: the village broker (south.conf, the
    ACL generated for the gateway file, a password per user, a CA for its TLS LAN listener),
    the city broker (see ``template_city``) and the gateway file made from the example.

    Ports are chosen when made, so the gateway file can be written before the brokers start.
    """

    def __init__(self, work: Path, *, north_persistence: bool = True, north_extra: str = "") -> None:
        import trustme  # a dev dependency: the village LAN listener's certificate

        self.work = work
        for name in ("south", "north", "certs"):
            (work / name).mkdir(exist_ok=True)
        # mosquitto started as root drops to the account named by "user" (here: ours)
        os.chmod(work, 0o755)  # a TemporaryDirectory is 0700
        ca = trustme.CA()
        self.ca = work / "certs" / "district-ca.crt"
        ca.cert_pem.write_to_path(str(self.ca))
        leaf = ca.issue_cert("127.0.0.1", "localhost", common_name="village-broker")
        certs = work / "south" / "certs"
        certs.mkdir(exist_ok=True)
        shutil.copyfile(self.ca, certs / "district-ca.crt")
        leaf.cert_chain_pems[0].write_to_path(str(certs / "broker.crt"))
        leaf.private_key_pem.write_to_path(str(certs / "broker.key"))
        os.chmod(certs / "broker.key", 0o600)
        (work / "south" / "data").mkdir(exist_ok=True)
        (work / "north" / "data").mkdir(exist_ok=True)
        self.north_persistence = north_persistence
        self.south = MosquittoProcess(
            listeners=[Listener(), Listener()],
            config=lambda p: template_south(SOUTH_CONF.read_text(), p.workdir, p.ports[0], p.ports[1]),
            workdir=work / "south",
        )
        self.north = MosquittoProcess(
            listeners=[Listener()],
            config=lambda p: template_city(
                CITY_CONF.read_text(), p.workdir, p.port, persistence=self.north_persistence
            ),
            extra_config=north_extra,
            workdir=work / "north",
        )
        self.passwords: dict[str, str] = {}  # south users
        self.north_passwords = {GW: secrets.token_urlsafe(12), CENTRE: secrets.token_urlsafe(12)}
        self.config: Path | None = None

    def write(self, north_port: int, tune: Callable[[dict[str, Any]], None] | None = None) -> Path:
        """The gateway file: the example with only what a deployment changes (data_dir, the
        south port, the password files, the north url: the city broker or the proxy in front
        of it), then ``tune`` (a row's own special settings); the ACLs and password files."""
        doc: dict[str, Any] = tomllib.loads(EXAMPLE.read_text())
        doc["gateway"]["data_dir"] = "state"
        doc["gateway"]["policy"] = "policy.toml"
        doc["south"]["url"] = f"mqtt://127.0.0.1:{self.south.ports[0]}"
        doc["south"]["password_file"] = "south.password"
        doc["north"] = {"url": f"mqtt://127.0.0.1:{north_port}", "username": GW, "password_file": "north.password"}
        if "modem" in doc:  # the shipped smsdrc, wherever this copy of the file is written
            doc["modem"]["smsdrc"] = str((EXAMPLE.parent / doc["modem"]["smsdrc"]).resolve())
        if tune is not None:
            tune(doc)
        (self.work / "policy.toml").write_text(POLICY)
        path = self.work / "gateway.toml"
        path.write_text(toml_dumps(doc))
        self.passwords = {GW: secrets.token_urlsafe(12)}
        for secret, password in (("south.password", self.passwords[GW]), ("north.password", self.north_passwords[GW])):
            (self.work / secret).write_text(password + "\n")
            os.chmod(self.work / secret, 0o600)
        loaded = load_config(path)
        for user in south_users(loaded):
            self.passwords.setdefault(user.name, secrets.token_urlsafe(12))
        (self.work / "south" / "acl").write_text(south_acl(loaded))
        write_password_file(self.work / "south" / "passwd", self.passwords)
        self.set_north_acl(CITY_ACL.read_text())
        write_password_file(self.work / "north" / "passwd", self.north_passwords)
        self.config = path
        return path

    def set_north_acl(self, text: str) -> None:
        """The city broker's ACL file (read at its next start)."""
        acl = self.work / "north" / "acl"
        acl.write_text(text)
        os.chmod(acl, 0o600)

    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    def start(self) -> None:
        self.south.start(timeout=15)
        self.north.start(timeout=15)

    def close(self) -> None:
        self.south.close()
        self.north.close()


def integrity(db: Path) -> str:
    """``PRAGMA integrity_check`` on the gateway's database ("ok" when sound)."""
    con = sqlite3.connect(str(db), timeout=10)
    try:
        return str(con.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        con.close()


def db_query(db: Path, sql: str) -> int:
    if not db.exists():
        return 0
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        row = con.execute(sql).fetchone()
        return int(row[0]) if row and row[0] is not None else 0
    except sqlite3.OperationalError:
        return 0  # schema not created yet
    finally:
        con.close()


class AgentProcess:
    """`edge-agent run -c CONFIG --speed N` as a child process that we can kill -9."""

    def __init__(self, config: Path, speed: float = 1.0) -> None:
        self.config = config
        self.speed = speed
        self.db = config.parent / "state" / "gateway.sqlite3"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] = open(config.parent / "agent.log", "ab")  # noqa: SIM115
        self.starts = 0

    def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        cmd = [sys.executable, "-m", "edge_agent.cli", "run", "-c", str(self.config), "--speed", str(self.speed)]
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, cwd=str(ROOT), env=env)
        self.starts += 1

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def crashed(self) -> int | None:
        """The exit code if the agent died by itself."""
        return None if self.proc is None else self.proc.poll()

    def close(self) -> None:
        self.kill()
        self._log.close()


async def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> None:
    """Wait (real time) until ``predicate()`` is truthy (or an awaitable it returns is done)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if isinstance(value, Awaitable):
            await asyncio.wait_for(value, timeout)
            return
        if value:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.01)


async def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


@contextlib.contextmanager
def layout(work: Path, *, north_persistence: bool = True, north_extra: str = "") -> Iterator[Layout]:
    """The shipped layout of one scenario (``Layout``), closed (brokers stopped) at the end;
    the caller writes the gateway file (``write``) and then ``start``s the brokers."""
    shipped = Layout(work, north_persistence=north_persistence, north_extra=north_extra)
    try:
        yield shipped
    finally:
        shipped.close()


def workdir(base: Path | None, name: str) -> contextlib.AbstractContextManager[str]:
    """``base/name`` kept after the run (``--keep``), else a temporary directory."""
    if base is not None:
        path = base / name
        path.mkdir(parents=True, exist_ok=True)
        return contextlib.nullcontext(str(path))
    return tempfile.TemporaryDirectory(prefix=f"chaos-{name}-")
