"""``python -m edge_agent.cli``: the ``edge-agent`` command without the installed script."""

from __future__ import annotations

from edge_agent.cli.main import main

main()
