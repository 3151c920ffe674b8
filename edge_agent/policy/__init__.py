"""The policy: pure decision code shared by the gateway and the twin.

Owns: lighting programs and the level decision, sun position (NOAA), responder choice, the safe
condition language, the policy file schema and the signed bundle format.
Must not import: asyncio, edge_agent.engine, edge_agent.transports, edge_agent.store,
edge_agent.agent, or anything that does I/O. The scalar functions in ``sun``, ``lighting`` and
``dispatch`` are written in the subset Numba compiles, so the twin can ``numba.njit`` the very
same functions the gateway runs as plain Python.
"""
