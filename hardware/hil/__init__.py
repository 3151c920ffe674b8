"""Hardware-in-the-loop harness: pty buses between the agent-side code and firmware running
under the MicroPython unix port (or emulated in-process), with fault injection.

Owns: ``ptybus`` (a relay thread: pty for the agent, pipes or in-process nodes for devices,
baud pacing, byte loss, garbage, unplug/replug), ``procs`` (starting firmware processes).
Must not import: edge_agent.engine, edge_agent.policy, edge_agent.agent.
"""
