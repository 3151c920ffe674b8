"""The operator's console: every gateway, open alert, lamp fault, energy and rollout on one page.

Owns: nothing itself; ``serve_console`` (centre/console/server.py) is what the service starts.
Must not import: the service, the rollout driver.
"""

from centre.console.server import serve_console

__all__ = ["serve_console"]
