"""Gateway state in SQLite: outbox, shadow (desired/reported), timers, policy state.

Must not import: edge_agent.engine, edge_agent.transports, edge_agent.agent.
"""
