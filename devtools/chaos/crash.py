"""How a chaos row crashes the gateway: ``KillNine`` (kill -9, the page cache survives) or
``PowerCut`` (the data directory on ``devtools.powercut.PowerCutFS``: what was not fsynced is
gone, torn prefixes of unsynced writes optionally kept).

Owns: the ``Crash`` strategy a scenario holds: ``mounted(data_dir)`` (a context around the
whole run: nothing for kill -9, the power-cut mount of the agent's data directory for a power
cut, backed by ``<data_dir>.disk``), ``strike(agent)`` (the fault itself; the agent is down
afterwards and the caller restarts it) and ``what`` (the row title's words). A scenario calls
``strike`` where it used to kill, so every kill row gets a power-cut twin with no new code.

Must not import: edge_agent.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from devtools.chaos.harness import AgentProcess
from devtools.powercut import PowerCutFS


class Crash(Protocol):
    what: str  # "agent kill -9" | "power cut"
    noun: str  # "kills" | "cuts"

    def mounted(self, data_dir: Path) -> contextlib.AbstractContextManager[None]: ...

    def strike(self, agent: AgentProcess) -> None: ...


class KillNine:
    """kill -9 of the agent: what it wrote stays in the kernel's page cache."""

    what = "agent kill -9"
    noun = "kills"

    def mounted(self, data_dir: Path) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def strike(self, agent: AgentProcess) -> None:
        agent.kill()


class PowerCut:
    """A power cut of the gateway: the agent SIGKILLed with every other user of its data
    directory, everything not fsynced dropped (half the cuts keep a random sector-aligned
    prefix of each file's unsynced writes: torn writes), the directory remounted as the disk
    has it."""

    what = "power cut"
    noun = "cuts"

    def __init__(self, seed: int = 1) -> None:
        self.rng = random.Random(seed)
        self.fs: PowerCutFS | None = None
        self.stats: dict[str, int] = {}

    @contextlib.contextmanager
    def _mount(self, data_dir: Path) -> Iterator[None]:
        with PowerCutFS(data_dir.with_name(data_dir.name + ".disk"), data_dir) as fs:
            self.fs = fs
            try:
                yield
            finally:
                self.stats = fs.stats()
                self.fs = None

    def mounted(self, data_dir: Path) -> contextlib.AbstractContextManager[None]:
        return self._mount(data_dir)

    def strike(self, agent: AgentProcess) -> None:
        if self.fs is None:
            raise RuntimeError("PowerCut.strike outside PowerCut.mounted: the data dir is not on the power-cut FS")
        proc = agent.proc
        torn = self.rng if self.rng.random() < 0.5 else None
        self.fs.cut(torn, also=[proc.pid] if proc is not None else [])
        agent.kill()  # reaps the child the cut killed


def crash_notes(crash: Crash) -> list[str]:
    """What a power cut's file system discarded over the run (nothing for kill -9), for the notes."""
    if not isinstance(crash, PowerCut):
        return []
    s = crash.fs.stats() if crash.fs is not None else crash.stats
    return [
        f"power-cut FS: {s.get('cuts', 0)} cuts discarded {s.get('bytes_discarded', 0)} unsynced bytes and"
        f" {s.get('entries_discarded', 0)} directory entries, kept {s.get('torn_writes', 0)} torn prefixes"
    ]
