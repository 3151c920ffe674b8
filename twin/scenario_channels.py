"""The scenario's channels and answer tiers: how a notification reaches a person, and how soon
the person answers (TOML tables ``[channels.<name>]`` and ``[dispatch.answer.<role>]``).

Owns: their schema (frozen msgspec Structs), the check of each keyed table on its own (so a
problem names ``channels.sms.failure``, not msgspec's ``channels[...]``) and the cross-checks
(known channel names, one delay form, roles of the policy's chains, declared channels).

Delays are in seconds, in one of two forms:

* lognormal by ``median_seconds`` and ``p90_seconds``: delivery and answer delays are positive
  and right-skewed (a queue at the SMS centre, a retry, a phone in a pocket multiply the time
  rather than add to it), and the median and the 90th percentile are the two figures a
  delivery report or an acknowledgement log gives directly; ``p90_seconds == median_seconds``
  is a fixed delay;
* exponential by ``mean_seconds`` (memoryless; the twin's answer delay before channels).

A channel's name is one the gateway notifies by; its route says what it needs on the way:
``app`` (the MQTT app topic on the village LAN; responders not on the LAN are reached through
the centre, after the uplink), ``sms`` and ``ring`` (the gateway's cellular modem: no uplink
needed), ``push`` (Apprise/ntfy over the internet: after the uplink).

The policy decides which channels a notification goes by (its chain's ``channels`` and
``after``); the scenario models each channel's delay and failure. A scenario that declares any
channel must declare every channel of its policy's chains (a channel the policy uses is never
silently modelled as perfect). A tier (responder role) without an ``answer`` table answers with
``dispatch.ack_probability`` after an exponential delay of mean ``dispatch.ack_delay_minutes``;
a tier has every declared channel unless its ``channels`` list names some (some doctors have no
push); a notification goes by the chain's channels the tier has. No channel declared: a
notification reaches the responder at once (after the uplink if not local), as the twin did
before channels.

Must not import: simpy, numba, twin.sim, twin.kernels.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import msgspec

from edge_agent.errors import Problem
from edge_agent.policy.chains import Chain
from edge_agent.policy.model import convert_section

# The gateway's channel names and what each needs on the way (see the module docstring).
CHANNEL_ROUTES = {"app": "lan", "sms": "cellular", "ring": "cellular", "push": "internet"}

PositiveSeconds = Annotated[float, msgspec.Meta(gt=0)]
NonNegativeSeconds = Annotated[float, msgspec.Meta(ge=0)]
Probability = Annotated[float, msgspec.Meta(ge=0, le=1)]


class ChannelSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One channel: its delivery delay (one form, seconds) and the chance a message never arrives."""

    median_seconds: PositiveSeconds | None = None
    p90_seconds: PositiveSeconds | None = None
    mean_seconds: NonNegativeSeconds | None = None
    failure: Probability = 0.0


class AnswerSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One tier's human answer: the chance a reached responder answers at all, the delay from
    the message arriving to the acknowledgement (seconds; none given: the dispatch default) and
    the channels the role has (none given: every declared channel); its notifications go by
    those of them its chain's ``channels`` name."""

    median_seconds: PositiveSeconds | None = None
    p90_seconds: PositiveSeconds | None = None
    mean_seconds: NonNegativeSeconds | None = None
    probability: Probability | None = None  # default: dispatch.ack_probability
    channels: list[str] | None = None


def check_keyed_tables(raw: dict[str, Any], source: str, problems: list[Problem]) -> dict[str, Any]:
    """Convert each ``channels.<name>`` and ``dispatch.answer.<role>`` table on its own, recording
    problems with their full key path; returns ``raw`` without the tables that failed (so the
    whole-scenario conversion does not report them again under a path without their name)."""
    out = dict(raw)
    channels = raw.get("channels")
    if isinstance(channels, dict):
        out["channels"] = _keep_valid(channels, ChannelSpec, source, "channels", problems)
    dispatch = raw.get("dispatch")
    if isinstance(dispatch, dict) and isinstance(dispatch.get("answer"), dict):
        out["dispatch"] = {
            **dispatch,
            "answer": _keep_valid(dispatch["answer"], AnswerSpec, source, "dispatch.answer", problems),
        }
    return out


def _keep_valid(
    tables: dict[str, Any], schema: type, source: str, path: str, problems: list[Problem]
) -> dict[str, Any]:
    kept = {}
    for name, table in tables.items():
        if convert_section(table, schema, source, f"{path}.{name}", problems) is not None:
            kept[name] = table
    return kept


def _check_delay(
    spec: ChannelSpec | AnswerSpec, required: bool, source: str, path: str, problems: list[Problem]
) -> None:
    lognormal = spec.median_seconds is not None or spec.p90_seconds is not None
    exponential = spec.mean_seconds is not None
    forms = "set median_seconds and p90_seconds (lognormal) or mean_seconds (exponential)"
    if lognormal and exponential:
        problems.append(Problem(source, path, f"two delay forms given; {forms}, not both"))
    elif lognormal and (spec.median_seconds is None or spec.p90_seconds is None):
        missing = "p90_seconds" if spec.p90_seconds is None else "median_seconds"
        problems.append(Problem(source, f"{path}.{missing}", f"missing; a lognormal delay needs both ({forms})"))
    elif lognormal and spec.p90_seconds is not None and spec.median_seconds is not None:
        if spec.p90_seconds < spec.median_seconds:
            problems.append(
                Problem(source, f"{path}.p90_seconds", f"below median_seconds ({spec.median_seconds:g}); expected >=")
            )
    elif required and not exponential:
        problems.append(Problem(source, path, f"no delivery delay; {forms}"))


def check_channels(
    channels: Mapping[str, ChannelSpec],
    answers: Mapping[str, AnswerSpec],
    chains: Mapping[str, Chain],
    source: str,
    problems: list[Problem],
) -> None:
    """Known channel names, one delay form each, every channel of the policy's chains declared
    (when any is), tiers that are roles of the policy's chains, tier channel lists naming
    declared channels and leaving the role a channel of each chain it is in."""
    for name, channel in channels.items():
        if name not in CHANNEL_ROUTES:
            problems.append(
                Problem(
                    source, f"channels.{name}", f"unknown channel; the gateway notifies by {sorted(CHANNEL_ROUTES)}"
                )
            )
        _check_delay(channel, True, source, f"channels.{name}", problems)
    if channels:
        reported = {p.path.split(".")[1] for p in problems if p.path.startswith("channels.")}  # declared, bad
        for chain_name, chain in chains.items():
            for name in chain.channels:
                if name not in channels and name not in reported:
                    problems.append(
                        Problem(
                            source,
                            f"channels.{name}",
                            f"not declared, but the policy's chain {chain_name!r} notifies by it; declare "
                            f"[channels.{name}] (its delay and failure) so the twin can model it",
                        )
                    )
    known_roles = sorted({role for chain in chains.values() for role in chain.roles})
    for role, answer in answers.items():
        path = f"dispatch.answer.{role}"
        if role not in known_roles:
            problems.append(
                Problem(source, path, f"role {role!r} is in no chain of the policy; chains use {known_roles}")
            )
        _check_delay(answer, False, source, path, problems)
        for i, name in enumerate(answer.channels or []):
            if name not in channels:
                problems.append(
                    Problem(
                        source,
                        f"{path}.channels[{i}]",
                        f"channel {name!r} is not declared; declare [channels.{name}] or use {sorted(channels)}",
                    )
                )
        if answer.channels is not None and not answer.channels:
            problems.append(Problem(source, f"{path}.channels", "empty; leave it out to use every declared channel"))
            continue
        for chain_name, chain in chains.items():
            if answer.channels and role in chain.roles and not set(answer.channels) & set(chain.channels):
                problems.append(
                    Problem(
                        source,
                        f"{path}.channels",
                        f"none of the chain {chain_name!r}'s channels {list(chain.channels)}: its "
                        f"{role} could never be reached",
                    )
                )
