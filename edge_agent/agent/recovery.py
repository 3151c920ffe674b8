"""When handling an input fails: the engine rebuilt from the store, and the fallback alert.

Owns: ``fresh_engine`` (a new engine on the same or a new policy, its in-memory state, dispatch
included, rebuilt from what the store holds: after a policy install, and after a failed
transaction left the old engine's memory ahead of the store) and ``raise_fallback`` (an
emergency whose handling raised still reaches a responder).

The fallback path. An SOS or a fall (wearable events of those names, ``models.EMERGENCY_EVENTS``) whose
handling raised an unexpected error is not left to the rule that failed: an alert of priority 1
is raised through the engine's alerting and dispatch (the same chains, the same responders'
availability), on ``fallback_chain``: the chain the policy's own rules for that event name
notify (the first such rule, in policy order), else a chain named ``medical``, else the
policy's first chain, else none (a plain alert, still on the platform's alert topic). Its rule
is ``fallback:<event>``. The caller commits it (durable) and syncs before acknowledging.
Must not import: the app, the flows (intake, outbound, lamps).
"""

from __future__ import annotations

from edge_agent.engine import Effect, Engine, Site
from edge_agent.models import EMERGENCY_EVENTS, Alert, Event
from edge_agent.policy.model import Notify, Policy, RaiseAlert
from edge_agent.store.db import Store


def is_emergency(event: Event | None) -> bool:
    return event is not None and event.kind == "wearable" and event.name in EMERGENCY_EVENTS


def fresh_engine(previous: Engine, policy: Policy, site: Site, store: Store, now: float) -> tuple[Engine, list[Effect]]:
    """A new engine running ``policy``, started from the store (timers, open alerts and their
    dispatch); lamps keep the level they show, unsaved traces carry over. Call inside a store
    transaction; apply the returned effects in it."""
    engine = Engine(policy, site, store)
    for lamp_id, state in previous.lighting.lamps.items():
        if lamp_id in engine.lighting.lamps:
            engine.lighting.lamps[lamp_id].level = state.level
            engine.lighting.lamps[lamp_id].boost_until = state.boost_until
    for trace in previous.take_traces():
        engine.trace_buffer.add(trace)
    return engine, engine.start(now)


def fallback_chain(engine: Engine, event_name: str) -> str | None:
    """The chain a fallback alert for ``event_name`` notifies (see the module docstring)."""
    chains = engine.policy.chains
    for rule in engine.by_event.get(event_name, ()):
        for action in rule.actions:
            chain = action.notify if isinstance(action, RaiseAlert) else getattr(action, "chain", None)
            if isinstance(action, RaiseAlert | Notify) and chain in chains:
                return chain
    if "medical" in chains:
        return "medical"
    return next(iter(chains), None)


def raise_fallback(engine: Engine, event: Event, effects: list[Effect]) -> Alert:
    """Raise the fallback alert for ``event`` (its effects appended to ``effects``). Call
    inside a store transaction."""
    chain = fallback_chain(engine, event.name)
    message = f"{event.name} from {event.device}"
    return engine.alerting.raise_alert(f"fallback:{event.name}", event.device, 1, message, chain, event.ts, effects)
