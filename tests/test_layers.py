"""The floors of the house, read from the code: which package may import which, and no circles.

Every ``import`` in edge_agent/, twin/ and devtools/ is read from the AST, including imports
inside functions and under ``TYPE_CHECKING``: a lazy import hides a circle from the
interpreter, not from the reader. The rules are ARCHITECTURE.md's "Parts and which way
imports point"; docs/LAYERS.md says the same in a table.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("edge_agent", "twin", "centre", "devtools")
SHIPPED = ("edge_agent", "twin", "centre")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))}


def imported(path: Path, name: str, known: set[str]) -> Iterator[tuple[str, int]]:
    """Every module of ours (or foreign top-level package) that ``path`` imports, with its line."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                candidate = f"{source}.{alias.name}"
                yield (candidate if candidate in known else source), node.lineno


def graph() -> dict[str, set[str]]:
    known = modules()
    names = set(known)
    edges: dict[str, set[str]] = {}
    for name, path in known.items():
        edges[name] = {target for target, _ in imported(path, name, names) if target in names and target != name}
    return edges


def owner(module: str, table: dict[str, tuple[str, ...]]) -> str | None:
    """The longest prefix of ``module`` that names a layer in ``table``."""
    parts = module.split(".")
    for size in range(len(parts), 0, -1):
        prefix = ".".join(parts[:size])
        if prefix in table:
            return prefix
    return None


def test_shipped_packages_import_neither_devtools_nor_hardware() -> None:
    found = sorted(
        {
            f"{path.relative_to(ROOT)}:{line} imports {target}"
            for name, path in modules().items()
            if name.split(".")[0] in SHIPPED
            for target, line in imported(path, name, set())
            if target.split(".")[0] in ("devtools", "hardware", "tests")
        }
    )
    assert not found, "a shipped module reaches up to a floor that is not shipped:\n" + "\n".join(found)


# What each part of the product may import of ours (besides itself). ARCHITECTURE.md, "Parts".
ALLOWED: dict[str, tuple[str, ...]] = {
    # contracts and leaves: plain values, no I/O of ours
    "edge_agent.errors": (),
    "edge_agent.units": (),
    "edge_agent.histogram": (),
    "edge_agent.clock": (),
    "edge_agent.loopback": (),
    "edge_agent.codec": ("edge_agent.errors",),
    "edge_agent.models": ("edge_agent.errors", "edge_agent.policy"),
    "edge_agent.receiver": ("edge_agent.errors", "edge_agent.models"),
    # pure decisions: no I/O, no asyncio; the twin jits them
    "edge_agent.policy": ("edge_agent.errors",),
    "edge_agent.config": ("edge_agent.errors", "edge_agent.policy", "edge_agent.models"),
    "edge_agent.store": ("edge_agent.errors", "edge_agent.models", "edge_agent.policy", "edge_agent.clock"),
    "edge_agent.engine": (
        "edge_agent.errors",
        "edge_agent.models",
        "edge_agent.policy",
        "edge_agent.store",
        "edge_agent.clock",
    ),
    # bytes and messages only
    "edge_agent.transports": ("edge_agent.errors", "edge_agent.codec", "edge_agent.models", "edge_agent.histogram"),
    # the HTTP face reads its own read model, never the agent; its settings are the [http] table
    "edge_agent.http": (
        "edge_agent.errors",
        "edge_agent.models",
        "edge_agent.histogram",
        "edge_agent.loopback",
        "edge_agent.config",
    ),
    # responder channels: the modem (Gammu's SMS daemon) as a link; nothing of the agent
    "edge_agent.notify": ("edge_agent.errors", "edge_agent.config", "edge_agent.transports"),
    "edge_agent.talq": ("edge_agent.errors", "edge_agent.models", "edge_agent.policy", "edge_agent.config"),
    # the composition root and the operator's commands know everything in edge_agent
    "edge_agent.agent": ("edge_agent",),
    "edge_agent.cli": ("edge_agent",),
    "edge_agent": ("edge_agent",),
    # the twin stands on the policy (and its error type), never on the gateway's runtime
    "twin": ("twin", "edge_agent.policy", "edge_agent.errors", "centre.db"),
    # the district centre reads what gateways send (models, receiver), speaks MQTT with the
    # gateway's link (acknowledging after the commit) and shares its config grammar and terminal
    "centre": (
        "centre",
        "edge_agent.errors",
        "edge_agent.clock",
        "edge_agent.loopback",
        "edge_agent.histogram",
        "edge_agent.policy",
        "edge_agent.models",
        "edge_agent.receiver",
        "edge_agent.transports",
        "edge_agent.config",
        "edge_agent.http",
        "edge_agent.cli.terminal",
    ),
    "devtools": ("devtools", "edge_agent", "twin", "centre", "hardware"),
}


def test_every_import_points_the_allowed_way() -> None:
    found = []
    for source, targets in graph().items():
        layer = owner(source, ALLOWED)
        assert layer is not None, f"{source} is in no layer: add it to ALLOWED in {__file__}"
        for target in sorted(targets):
            target_layer = owner(target, ALLOWED)
            if target_layer == layer:
                continue
            if not any(target == ok or target.startswith(ok + ".") for ok in ALLOWED[layer]):
                found.append(f"{source} -> {target}")
    assert not found, "imports against ARCHITECTURE.md's directions:\n" + "\n".join(found)


def strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iteratively: the components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_cycles() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e2"}, "e2": set()}
    assert strongly_connected(edges) == [["a", "b", "c"]]


def test_no_import_circle() -> None:
    circles = strongly_connected(graph())
    assert not circles, "import circles (including lazy and TYPE_CHECKING imports):\n" + "\n".join(
        " <-> ".join(circle) for circle in circles
    )


@pytest.mark.parametrize("package", SHIPPED)
def test_no_shipped_module_is_over_450_lines(package: str) -> None:
    long = {
        str(path.relative_to(ROOT)): lines
        for path in (ROOT / package).rglob("*.py")
        if (lines := len(path.read_text().splitlines())) > 450
    }
    assert not long, f"split these modules by what they own: {long}"
