"""Transports move bytes and messages: MQTT, the embedded broker, serial links, Modbus RTU.

Must not import: edge_agent.engine, edge_agent.policy, edge_agent.agent.
"""
