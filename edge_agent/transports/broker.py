"""The embedded MQTT broker (amqtt) for a standalone gateway and the demo.

Owns: starting and stopping an in-process broker on a free loopback port (or a given one).
Never assumes port 1883 is free: on many machines Mosquitto already holds it.
"""

from __future__ import annotations

import logging
import socket
from types import TracebackType
from typing import Any

from edge_agent.errors import TransportError


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


class EmbeddedBroker:
    """An amqtt broker running inside this event loop. Use as ``async with``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port or free_port(host)
        self._broker: Any = None

    async def __aenter__(self) -> EmbeddedBroker:
        from amqtt.broker import Broker  # imported late: amqtt is heavy

        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.WARNING)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        self._broker = Broker(config)
        try:
            await self._broker.start()
        except Exception as exc:
            raise TransportError(f"embedded broker could not listen on {self.host}:{self.port}: {exc}") from None
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._broker is not None:
            await self._broker.shutdown()
            self._broker = None
