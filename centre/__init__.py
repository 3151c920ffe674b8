"""The district centre: every gateway of a district on one screen.

Ingests what the gateways publish on the city broker (status, alerts, lamp telemetry, policy
acks, rollout summaries, shadow reports, history) into a database (PostgreSQL, or SQLite for a
one-machine district), serves the operator's console, rolls signed policies out in waves and
keeps the history ``twin calibrate --centre`` fits from.

Parts: ``config`` (centre.toml), ``db`` (one connection API over both databases, versioned
migrations), ``ingest`` (north messages -> rows), ``service`` (``centre run``), ``console``,
``rollout``, ``history``, ``cli``. May import of the gateway: ``edge_agent.policy``,
``edge_agent.models``, ``edge_agent.receiver``, ``edge_agent.errors``, ``edge_agent.clock`` and
``edge_agent.transports`` (the same MQTT link, acknowledging after the commit).
"""
