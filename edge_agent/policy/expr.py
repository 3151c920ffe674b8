"""A small, safe condition language, validated and compiled once at load.

Owns: parsing a condition such as ``heart_rate > 120 and battery >= 10`` or
``zone in ('north', 'east') and not is_day`` into a Python callable over a mapping of names.

Allowed: numbers, strings, True/False, names from a known vocabulary, comparisons (chained),
``and``/``or``/``not``, ``+ - * / %``, unary minus, ``in`` / ``not in`` over a literal tuple or
list. Not allowed: calls, attribute access, subscripts, lambdas, comprehensions, anything else.
Cost is bounded: at most ``MAX_NODES`` syntax nodes and ``MAX_LENGTH`` characters, no loops.
A name missing at run time makes the condition false (it is reported in the rule's trace).
"""

from __future__ import annotations

import ast
import difflib
import operator
from collections.abc import Callable, Collection, Mapping
from typing import Any

MAX_LENGTH = 500
MAX_NODES = 64

Env = Mapping[str, Any]
Compiled = Callable[[Env], Any]


class ExpressionError(ValueError):
    """A condition that cannot be accepted; the message says where and why."""


class MissingNameError(LookupError):
    """A name the event or context does not carry at run time."""


_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}
_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Mod: operator.mod,
}


def compile_condition(text: str, names: Collection[str]) -> Compiled:
    """Compile ``text`` into ``f(env) -> value``; raise ExpressionError naming the problem.

    The syntax tree is checked node by node against the whitelist below (``_compile``), then
    the checked tree, and only it, is compiled to bytecode and run with no builtins: names
    resolve only from the mapping passed at run time.
    """
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"condition longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        column = f" at column {exc.offset}" if exc.offset else ""
        raise ExpressionError(f"syntax error{column}: {exc.msg}") from None
    count = sum(1 for _ in ast.walk(tree))
    if count > MAX_NODES:
        raise ExpressionError(f"condition too complex ({count} nodes, at most {MAX_NODES})")
    _compile(tree.body, frozenset(names))  # validates every node; raises on anything else
    code = compile(tree, "<condition>", "eval")
    no_builtins: dict[str, Any] = {"__builtins__": {}}

    def run(env: Env) -> Any:
        try:
            return eval(code, no_builtins, env)  # a whitelisted tree, no builtins
        except NameError as exc:
            raise MissingNameError(exc.name or "?") from None

    return run


def _compile(node: ast.expr, names: frozenset[str]) -> Compiled:
    if isinstance(node, ast.Constant):
        if not isinstance(node.value, int | float | str | bool):
            raise ExpressionError(f"unsupported constant {node.value!r}")
        value = node.value
        return lambda env: value
    if isinstance(node, ast.Name):
        name = node.id
        if name not in names:
            close = difflib.get_close_matches(name, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            known = ", ".join(sorted(names))
            raise ExpressionError(f"unknown name {name!r}{hint}; known names: {known}")

        def lookup(env: Env) -> Any:
            try:
                return env[name]
            except KeyError:
                raise MissingNameError(name) from None

        return lookup
    if isinstance(node, ast.Tuple | ast.List):
        items = [_compile(e, names) for e in node.elts]
        if not all(isinstance(e, ast.Constant) for e in node.elts):
            raise ExpressionError("a list in a condition may hold only literal values")
        frozen = tuple(item({}) for item in items)
        return lambda env: frozen
    if isinstance(node, ast.BoolOp):
        parts = [_compile(v, names) for v in node.values]
        if isinstance(node.op, ast.And):
            return lambda env: all(p(env) for p in parts)
        return lambda env: any(p(env) for p in parts)
    if isinstance(node, ast.UnaryOp):
        operand = _compile(node.operand, names)
        if isinstance(node.op, ast.Not):
            return lambda env: not operand(env)
        if isinstance(node.op, ast.USub):
            return lambda env: -operand(env)
        raise ExpressionError(f"operator {type(node.op).__name__} is not allowed")
    if isinstance(node, ast.BinOp):
        op = _BINARY.get(type(node.op))
        if op is None:
            raise ExpressionError(f"operator {type(node.op).__name__} is not allowed")
        left, right = _compile(node.left, names), _compile(node.right, names)
        return lambda env: op(left(env), right(env))
    if isinstance(node, ast.Compare):
        first = _compile(node.left, names)
        ops = []
        for cmp, comparator in zip(node.ops, node.comparators, strict=True):
            fn = _COMPARE.get(type(cmp))
            if fn is None:
                raise ExpressionError(f"comparison {type(cmp).__name__} is not allowed")
            ops.append((fn, _compile(comparator, names)))

        def compare(env: Env) -> bool:
            left = first(env)
            for fn, right_fn in ops:
                right = right_fn(env)
                if not fn(left, right):
                    return False
                left = right
            return True

        return compare
    kind = type(node).__name__
    raise ExpressionError(
        f"{kind} is not allowed in a condition (use names, numbers, strings, comparisons, and/or/not, arithmetic)"
    )


def evaluate(condition: Compiled, env: Env) -> tuple[bool, str | None]:
    """Run a compiled condition: (result, reason when it could not be evaluated)."""
    try:
        return bool(condition(env)), None
    except MissingNameError as exc:
        return False, f"missing value {exc.args[0]!r}"
    except (TypeError, ZeroDivisionError) as exc:
        return False, f"{type(exc).__name__}: {exc}"
