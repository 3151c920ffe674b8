"""Gateway state in SQLite: the store in parts on one connection (edge_agent/store/db.py), and
the policy store (edge_agent/store/policy_store.py).

Must not import: edge_agent.engine, edge_agent.transports, edge_agent.agent.
"""
