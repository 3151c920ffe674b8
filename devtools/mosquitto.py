"""Start a private Mosquitto on free loopback ports (tests, benchmarks, fleet and chaos runs).

Owns: the one Mosquitto launcher: free ports chosen once (kept across restarts), a config
written into a work dir (one plain listener by default; any number of listeners with their
own options: TLS files, password file, ACL, ``per_listener_settings``; or a whole config text
of the caller's own), the readiness wait on every port, and stop / kill -9 / restart by pid
(a restart keeps the ports and the persistence dir). Never touches the system Mosquitto on
1883. Falls back to nothing: callers decide whether the embedded broker is an acceptable
substitute.
"""

from __future__ import annotations

import contextlib
import getpass
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from edge_agent.errors import TransportError
from edge_agent.transports.broker import free_port

LOOPBACK = "127.0.0.1"
# with persistence: save after every change, so a kill -9 loses nothing already acknowledged
SAVE_EVERY_CHANGE = "autosave_interval 1\nautosave_on_changes true\n"


def mosquitto_binary() -> str | None:
    for candidate in ("mosquitto", "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        found = shutil.which(candidate)
        if found:
            return found
    return None


def write_password_file(path: Path, passwords: Mapping[str, str]) -> Path:
    """A Mosquitto ``password_file`` (hashed by ``mosquitto_passwd``), mode 0600."""
    path.write_text("")
    tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    for user, password in passwords.items():
        subprocess.run([tool, "-b", str(path), user, password], check=True, capture_output=True)
    path.chmod(0o600)
    return path


@dataclass(frozen=True)
class Listener:
    """One ``listener PORT HOST`` block; ``port`` 0 picks a free port when the process is made.

    ``options`` are the lines under it, in order (``{"cafile": ca, "require_certificate": True,
    "acl_file": acl}``); a value of True / False is written as ``true`` / ``false``; a list
    value writes the option once per item.
    """

    port: int = 0
    host: str = LOOPBACK
    options: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def tls(
        cls,
        cafile: Path | str,
        certfile: Path | str,
        keyfile: Path | str,
        *,
        port: int = 0,
        require_certificate: bool = True,
        **options: Any,
    ) -> Listener:
        """A TLS listener (client certificates required by default) with extra ``options``."""
        tls = {"cafile": cafile, "certfile": certfile, "keyfile": keyfile}
        return cls(port, options={**tls, "require_certificate": require_certificate, **options})


def _option_lines(options: Mapping[str, Any]) -> list[str]:
    lines = []
    for key, value in options.items():
        for item in value if isinstance(value, list | tuple) else [value]:
            text = ("true" if item else "false") if isinstance(item, bool) else str(item)
            lines.append(f"{key} {text}")
    return lines


ConfigSource = str | Callable[["MosquittoProcess"], str]


class MosquittoProcess:
    """A Mosquitto child process with its own config, ports and (optional) persistence dir.

    Default: one anonymous plain listener on a free loopback port (``.port``). ``listeners``
    replaces it with any number of listeners (``.ports`` in the same order, ``.port`` the
    first). ``config`` replaces the generated text altogether (a string, or a function of this
    object, called at each start, so it can use ``.ports`` and ``.workdir``); the readiness wait
    still covers every listener's port. ``extra_config`` is appended to either.

    Started as root, Mosquitto drops to the account "mosquitto" unless ``user`` names another
    (e.g. ``getpass.getuser()``): a persistence dir must then be writable by that account.
    """

    def __init__(
        self,
        port: int = 0,
        *,
        listeners: Sequence[Listener] | None = None,
        persistence: bool = False,
        extra_config: str = "",
        workdir: Path | None = None,
        per_listener_settings: bool = False,
        user: str | None = None,
        log_file: Path | None = None,
        config: ConfigSource | None = None,
    ) -> None:
        binary = mosquitto_binary()
        if binary is None:
            raise TransportError("mosquitto is not on PATH (apt-get install mosquitto)")
        self.binary = binary
        self.host = LOOPBACK
        chosen = list(listeners) if listeners is not None else [Listener(port, options={"allow_anonymous": True})]
        taken: set[int] = set()
        self.listeners: list[Listener] = []
        for listener in chosen:
            number = listener.port
            while not number or number in taken:
                number = free_port(listener.host)
            taken.add(number)
            self.listeners.append(Listener(number, listener.host, listener.options))
        self.persistence = persistence
        self.extra_config = extra_config
        self.per_listener_settings = per_listener_settings
        self.user = user
        self.log_file = log_file
        self.config = config
        self._tmp = tempfile.TemporaryDirectory(prefix="mosq-") if workdir is None else None
        self.workdir = workdir or Path(self._tmp.name)  # type: ignore[union-attr]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def ports(self) -> list[int]:
        return [listener.port for listener in self.listeners]

    @property
    def port(self) -> int:
        return self.listeners[0].port

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def config_text(self) -> str:
        if self.config is not None:
            text = self.config if isinstance(self.config, str) else self.config(self)
            return text + self.extra_config
        lines = ["per_listener_settings true"] if self.per_listener_settings else []
        if self.user is not None:
            lines.append(f"user {self.user}")
        for listener in self.listeners:
            lines.append(f"listener {listener.port} {listener.host}")
            lines += _option_lines(listener.options)
        lines += [
            "max_queued_messages 100000",
            "set_tcp_nodelay true",  # no Nagle stalls between small QoS 1 packets
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.workdir}/",
            f"log_dest file {self.log_file}" if self.log_file is not None else "log_dest none",
        ]
        return "\n".join(lines) + "\n" + self.extra_config

    def log(self) -> str:
        """The broker's log file (when ``log_file`` was given), else ""."""
        if self.log_file is None or not self.log_file.exists():
            return ""
        return self.log_file.read_text(errors="replace")

    def start(self, timeout: float = 10.0) -> MosquittoProcess:
        """Write the config, start the broker and wait until every port accepts connections."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        text = self.config_text()
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(text)
        self.proc = subprocess.Popen([self.binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        waiting = {(listener.host, listener.port) for listener in self.listeners}
        while waiting:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                self.stop()
                raise TransportError(f"mosquitto exited at start: {err.strip()} {self.log()}".strip())
            if time.monotonic() > deadline:
                self.stop()
                where = ", ".join(f"{host}:{port}" for host, port in sorted(waiting))
                raise TransportError(f"mosquitto did not listen on {where} {self.log()}".strip())
            for address in list(waiting):
                with contextlib.suppress(OSError), socket.create_connection(address, timeout=0.2):
                    waiting.discard(address)
            if waiting:
                time.sleep(0.02)
        return self

    def stop(self, *, kill: bool = False) -> None:
        """SIGTERM (or SIGKILL with ``kill``) to the broker's pid and wait for it."""
        if self.proc is None:
            return
        if kill:
            self.proc.kill()
        else:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def kill(self) -> None:
        """kill -9: no goodbye, no final persistence save (what autosave wrote survives)."""
        self.stop(kill=True)

    def restart(self, *, kill: bool = False, timeout: float = 10.0) -> MosquittoProcess:
        """Stop (or kill -9) and start again on the same ports with the same persistence dir."""
        self.stop(kill=kill)
        return self.start(timeout)

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> MosquittoProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def deploy_config(
    text: str, workdir: Path, name: str, replacements: Mapping[str, str], *, all_paths: bool = True
) -> str:
    """A shipped Mosquitto config (deploy/mosquitto/``name``) run from ``workdir``: the account,
    the certificate, ACL, password, data and log paths moved there, plus ``replacements``
    (listener lines, say). Every rewrite must apply (``all_paths=False``: only the paths the
    text uses, for a part of a file), so a change of the shipped file that a test would
    silently stop exercising fails loudly instead."""
    paths = {
        "/etc/mosquitto/certs/district-ca.crt": str(workdir / "certs" / "district-ca.crt"),
        "/etc/mosquitto/certs/broker.crt": str(workdir / "certs" / "broker.crt"),
        "/etc/mosquitto/certs/broker.key": str(workdir / "certs" / "broker.key"),
        "/etc/mosquitto/acl": str(workdir / "acl"),
        "/etc/mosquitto/passwd": str(workdir / "passwd"),
        "/var/lib/mosquitto/": f"{workdir}/data/",
        "/var/log/mosquitto/mosquitto.log": str(workdir / "mosquitto.log"),
    }
    if not all_paths:
        paths = {old: new for old, new in paths.items() if old in text}
    # the account Mosquitto drops to when started as root: the runner's own
    rewrites = {"user mosquitto\n": f"user {getpass.getuser()}\n", **paths, **replacements}
    for old, new in rewrites.items():
        if old not in text:
            raise AssertionError(f"deploy/mosquitto/{name} no longer contains {old!r}")
        text = text.replace(old, new)
    return text
