"""Start a private Mosquitto on a free loopback port (tests, benchmarks, fleet and chaos runs).

Never touches the system Mosquitto on 1883. Falls back to nothing: callers decide whether the
embedded broker is an acceptable substitute.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from edge_agent.errors import TransportError
from edge_agent.transports.broker import free_port


def mosquitto_binary() -> str | None:
    for candidate in ("mosquitto", "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        found = shutil.which(candidate)
        if found:
            return found
    return None


class MosquittoProcess:
    """A Mosquitto child process with its own config, port and (optional) persistence dir."""

    def __init__(
        self,
        port: int = 0,
        *,
        persistence: bool = False,
        extra_config: str = "",
        workdir: Path | None = None,
    ) -> None:
        binary = mosquitto_binary()
        if binary is None:
            raise TransportError("mosquitto is not on PATH (apt-get install mosquitto)")
        self.binary = binary
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.persistence = persistence
        self.extra_config = extra_config
        self._tmp = tempfile.TemporaryDirectory(prefix="mosq-") if workdir is None else None
        self.workdir = workdir or Path(self._tmp.name)  # type: ignore[union-attr]
        self.proc: subprocess.Popen[bytes] | None = None

    def config_text(self) -> str:
        lines = [
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            "max_queued_messages 100000",
            "set_tcp_nodelay true",  # no Nagle stalls between small QoS 1 packets
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.workdir}/",
            "log_dest none",
        ]
        return "\n".join(lines) + "\n" + self.extra_config

    def start(self, timeout: float = 10.0) -> MosquittoProcess:
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(self.config_text())
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise TransportError(f"mosquitto exited at start: {err.strip()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise TransportError(f"mosquitto did not listen on {self.host}:{self.port}")

    def stop(self, *, kill: bool = False) -> None:
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

    def restart(self) -> None:
        self.stop()
        self.start()

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
