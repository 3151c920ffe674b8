"""Whether a host name or address stays on this machine.

Owns: ``is_loopback``, the one test both faces of the gateway apply to a configured host: the
MQTT links refuse plaintext to a broker beyond it (``agent/links.py``), the HTTP face needs a
token to listen beyond it and, without one, only answers requests naming it (``http/server.py``).
A leaf: imports nothing of ours.
"""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback IP address (IPv4 127.0.0.0/8, IPv6 ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
