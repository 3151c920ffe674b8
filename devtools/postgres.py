"""Start a throwaway PostgreSQL cluster on a free loopback port (tests, bench-centre, the demo).

Owns: the one PostgreSQL launcher: ``initdb`` into a work dir, ``pg_ctl start`` on a free port
with its socket in that dir, ``createdb`` of fresh databases, and ``pg_ctl stop`` plus removal
at the end. PostgreSQL refuses to run as root: as root the cluster runs as the ``postgres``
user (``runuser``), which Debian's package creates. Never touches the system's cluster on 5432.
"""

from __future__ import annotations

import contextlib
import getpass
import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from types import TracebackType

from edge_agent.transports.broker import free_port

LOOPBACK = "127.0.0.1"


def postgres_bindir() -> Path | None:
    """Debian's ``/usr/lib/postgresql/<major>/bin`` (newest major), or the dir of ``initdb`` on PATH."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent  # Debian links /usr/local/bin/initdb to its major's bin
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(candidates[-1]).parent if candidates else None


class PostgresCluster:
    """``with PostgresCluster() as pg: url = pg.create_database()``."""

    def __init__(self, workdir: Path | None = None) -> None:
        bindir = postgres_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql (initdb, pg_ctl)")
        self.bindir = bindir
        self._own_dir = workdir is None
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="centre-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.host = LOOPBACK
        self._as_root = os.geteuid() == 0
        self.user = "postgres" if self._as_root else getpass.getuser()

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self._as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, check=True, capture_output=True, text=True)

    def start(self) -> PostgresCluster:
        if self._as_root:
            shutil.chown(self.dir, "postgres")
        if not self.data.exists():
            self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", self.user, "--no-sync", "-E", "UTF8")
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses={LOOPBACK} "
            "-c fsync=on -c shared_buffers=64MB -c max_connections=50"
        )
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.dir / "log"), "-w", "start")
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; its URL."""
        name = name or "c" + uuid.uuid4().hex[:12]
        self._run("createdb", "-h", self.host, "-p", str(self.port), "-U", self.user, name)
        return self.url(name)

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
