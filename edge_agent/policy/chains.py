"""A responder chain: who is called in which order, how long each step waits for a person's
acknowledgement, and by which channels (and when) each step reaches its responder.

Owns: the ``[chains.<name>]`` table's type and its checks. Pure: no I/O. The dispatch state
machine (edge_agent/policy/dispatch_state.py) decides with it on the gateway and in the twin.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from edge_agent.errors import Problem
from edge_agent.policy.units import parse_duration

Name = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")]


class Chain(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Responder chain: roles in escalation order; each step waits ``ack_timeout`` for an ack.
    An acknowledging responder is busy until the alert is resolved, or ``resolve_timeout``
    after the acknowledgement (edge_agent/policy/dispatch_state.py)."""

    roles: list[Name]
    ack_timeout: str | int = "2m"
    repeat_last: bool = False
    resolve_timeout: str | int = "2h"
    # how each step reaches its responder: the app topic on the village broker, an SMS and a
    # ring (a call that rings and hangs up) through the gateway's modem to the responder's
    # phone, a push through the responder's Apprise URL; each only where the responder has it
    channels: tuple[Literal["app", "sms", "ring", "push"], ...] = ("app", "sms")
    # a channel listed here goes that long after the step starts, and only if the step is still
    # unanswered by then ("SMS, then ring after 60 s": after = { ring = "60s" }); the rest at once
    after: dict[Literal["app", "sms", "ring", "push"], str | int] = {}


def chain_problems(chain: Chain, source: str, path: str) -> list[Problem]:
    """What is wrong with one chain beyond its types (durations, roles, channels and delays)."""
    problems: list[Problem] = []
    for key in ("ack_timeout", "resolve_timeout"):
        try:
            parse_duration(getattr(chain, key))
        except ValueError as exc:
            problems.append(Problem(source, f"{path}.{key}", str(exc)))
    if not chain.roles:
        problems.append(Problem(source, f"{path}.roles", "expected at least one role"))
    if not chain.channels:
        problems.append(Problem(source, f"{path}.channels", "expected at least one channel"))
    for channel, delay in chain.after.items():
        where = f"{path}.after.{channel}"
        if channel not in chain.channels:
            problems.append(
                Problem(source, where, f"{channel!r} is not one of the chain's channels {list(chain.channels)}")
            )
            continue
        try:
            seconds, timeout = parse_duration(delay), parse_duration(chain.ack_timeout)
        except ValueError as exc:
            problems.append(Problem(source, where, str(exc)))
            continue
        if not 0 <= seconds < timeout:
            problems.append(
                Problem(source, where, f"{delay!r} must be shorter than the step's ack_timeout {chain.ack_timeout!r}")
            )
    return problems
