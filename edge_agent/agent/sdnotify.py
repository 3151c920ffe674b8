"""systemd's service notifications (sd_notify), in a few lines: no library, no-op off systemd.

Owns: sending ``READY=1``, ``STATUS=...``, ``WATCHDOG=1`` and ``STOPPING=1`` to the datagram
socket systemd names in ``NOTIFY_SOCKET`` (a path, or ``@name`` in the abstract namespace), and
the watchdog loop: with ``WatchdogSec=`` set, systemd passes ``WATCHDOG_USEC`` and restarts the
service when no ``WATCHDOG=1`` arrives in time. The ping is sent from a task of the agent's
own event loop, so a blocked or dead loop stops it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable

log = logging.getLogger("edge_agent")


def notify(*lines: str) -> bool:
    """Send one notification (lines joined by newlines); False when not run by systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    target = "\0" + address[1:] if address.startswith("@") else address
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto("\n".join(lines).encode(), target)
    except OSError as exc:
        log.warning("sd_notify to %s failed: %s", address, exc)
        return False
    return True


def watchdog_interval() -> float | None:
    """Seconds between pings (half of systemd's WatchdogSec), or None without a watchdog."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid.isdigit() and int(pid) != os.getpid():
        return None  # meant for another process (a parent that exec'd us keeps it)
    return int(usec) / 2e6


async def watchdog(status: Callable[[], str]) -> None:
    """Ping systemd's watchdog from this loop for as long as it runs, with a STATUS= line."""
    interval = watchdog_interval()
    if interval is None:
        return
    while True:
        notify("WATCHDOG=1", f"STATUS={status()}")
        await asyncio.sleep(interval)
