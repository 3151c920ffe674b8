"""What the HTTP face may *do* to the gateway: a responder's acknowledgement from a push.

Owns: ``GatewayActions``, the one interface through which a request changes the gateway's state
(the read model, ``readmodel.GatewayView``, offers no action), and its plain values. The link
in a push is ``/answer/<token>``: the token names one alert and one responder, and is the only
credential the request carries (edge_agent/policy/messages.py, ``ack_token``). The agent's side
lives in ``edge_agent/agent/push_acks.py``; this package imports nothing of ``edge_agent.agent``.
"""

from __future__ import annotations

from typing import Literal, Protocol

import msgspec

AckAction = Literal["ack", "resolve"]
# acknowledged / resolved: done; not_yours: the alert is not (or no longer) theirs to take or
# close; forged: no alert and responder of this gateway have that token
AckOutcome = Literal["acknowledged", "resolved", "not_yours", "forged"]


class AckTarget(msgspec.Struct, frozen=True):
    """The alert an acknowledge link names, as its responder may see it."""

    alert_id: str
    responder: str
    device: str
    message: str
    status: str  # the alert's status now
    # what the responder may do now: ("ack", "resolve") while it waits for them, ("resolve",)
    # once they took it, () when it is someone else's or closed
    allowed: tuple[AckAction, ...]


class GatewayActions(Protocol):
    """The acknowledgement from a push, as the HTTP face asks for it; called on the agent's
    own event loop."""

    def ack_target(self, token: str) -> AckTarget | None:
        """The alert and responder ``token`` names; None: no such token (a forged or mangled link)."""
        ...

    async def push_ack(self, token: str, action: AckAction) -> AckOutcome:
        """Acknowledge or resolve through the same path as an SMS reply; returns once what it
        changed is on disk. Refusals are counted by the agent (``push_ack_<reason>``)."""
        ...
