"""The command line's rich output, loaded on first use.

``edge-agent run`` prints no table: rich (about 2 MB of resident memory for the life of the
gateway process) is imported only when a command first prints through these.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


class LazyConsole:
    """A ``rich.console.Console`` made with ``options`` the first time it is used."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._console: Console | None = None

    def __getattr__(self, name: str) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return getattr(self._console, name)


def escape(text: str) -> str:
    """``rich.markup.escape``: text that is printed as is, never read as markup."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)
