"""The operator's command line, ``edge-agent``: one module per command group, none of it loaded
by the running gateway (``edge-agent run`` imports the agent only when it starts it).

Owns: ``main.py`` (the ``edge-agent`` app: run, check, traces, alerts, counters, rollout status),
``policy.py`` (keygen, sign, verify), ``shadow.py`` (the shadow report), ``talq.py`` (TALQ
export and import), ``acl.py`` (Mosquitto ACLs generated from the topic registry), and
``terminal.py`` (the rich console they print through). ``python -m edge_agent.cli`` is
``edge-agent``.
"""
