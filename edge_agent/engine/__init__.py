"""The rule engine: typed events in, effects out; timers, escalations and traces.

Owns: rule evaluation, the lighting controller, alert lifecycles, persisted timers.
Must not import: edge_agent.transports or edge_agent.agent. Uses edge_agent.policy (the
decisions) and edge_agent.store (persistence, inside the caller's transaction).
"""

from edge_agent.engine.effects import AlertChanged, Effect, LampSet, NotifyResponder, PublishRequest, SendRequest
from edge_agent.engine.engine import Engine
from edge_agent.engine.site import Site

__all__ = [
    "AlertChanged",
    "Effect",
    "Engine",
    "LampSet",
    "NotifyResponder",
    "PublishRequest",
    "SendRequest",
    "Site",
]
