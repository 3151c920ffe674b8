"""Edge agent: the software on a village or street gateway.

Owns: the gateway runtime (policy, engine, transports, store, agent). Sub-packages keep the
import directions of ../shared/design/ARCHITECTURE.md: ``policy`` is pure and imports nothing
of ours but ``errors``; ``transports`` never import the engine or the policy.
"""

from edge_agent.errors import (
    ConfigError,
    EdgeError,
    PolicyError,
    ProtocolError,
    TransportError,
)

__all__ = ["ConfigError", "EdgeError", "PolicyError", "ProtocolError", "TransportError"]
__version__ = "0.1.0"
