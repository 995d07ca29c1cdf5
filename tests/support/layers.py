"""The project's layering rules, read off the source with `ast` (no module is imported).

Layers, bottom up: `shared` (contract, bus, runtime: what every service stands on), the
`services.<name>` packages (each on its own), and `ops` (the operator tools that start and drive
services). An arrow may only point down, and no two modules may reach each other through their
imports, `TYPE_CHECKING` and function-local imports included: hiding an arrow in a function
does not remove it.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import networkx

PACKAGES = ("shared", "services", "ops", "bench")
MODULE_STRING = re.compile(r"^(services|ops)(\.[A-Za-z_]\w*)+$")
"""A string that names a module of an upper layer, as `importlib.import_module` would take it."""


@dataclass(frozen=True)
class Arrow:
    """One module naming another: by an import statement, or by a string (`line` is where)."""

    source: str
    target: str
    line: int
    by_string: bool = False


def modules(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """Every module under the given top-level packages, by dotted name."""
    found: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module a `from … import` starts from (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _imports(module: str, path: Path, known: dict[str, Path]) -> Iterator[Arrow]:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Arrow(module, alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, path.name == "__init__.py", node)
            for alias in node.names:
                name = f"{base}.{alias.name}"
                yield Arrow(module, name if name in known else base, node.lineno)


def _docstrings(tree: ast.AST) -> set[int]:
    """The ids of docstring nodes: prose that names a module is not an arrow."""
    ids: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            ids.add(id(body[0].value))
    return ids


def _strings(module: str, path: Path) -> Iterator[Arrow]:
    """Module names in strings and f-strings (`f"services.{name}.settings"`), docstrings aside."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skip = _docstrings(tree)
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and MODULE_STRING.match(node.value):
            yield Arrow(module, node.value, node.lineno, by_string=True)
        elif isinstance(node, ast.JoinedStr) and node.values:
            head = node.values[0]
            if isinstance(head, ast.Constant) and re.match(r"^(services|ops)\.", str(head.value)):
                yield Arrow(module, str(head.value).rstrip("."), node.lineno, by_string=True)


def arrows(root: Path, packages: tuple[str, ...] = PACKAGES) -> list[Arrow]:
    """Every arrow out of the tree's modules: imports of the tree's own modules, and strings."""
    known = modules(root, packages)
    found = [a for m, p in known.items() for a in _imports(m, p, known) if _top(a.target) in packages]
    return found + [a for m, p in known.items() for a in _strings(m, p)]


def _top(module: str) -> str:
    return module.split(".", maxsplit=1)[0]


def _service(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "services" and len(parts) > 1 else None


def forbidden(arrow: Arrow) -> str | None:
    """Why an arrow breaks the layering, or None when it may stand."""
    source, target = _top(arrow.source), _top(arrow.target)
    if source == "shared" and target in ("services", "ops"):
        return f"shared/ must not depend on {target}/"
    if source == "services" and target == "ops":
        return "a service must not depend on the operator tools (ops/)"
    mine, theirs = _service(arrow.source), _service(arrow.target)
    if mine and theirs and mine != theirs:
        return f"service {mine} must not depend on service {theirs}"
    return None


def violations(root: Path, packages: tuple[str, ...] = PACKAGES) -> list[str]:
    """One line per forbidden arrow: `source:line -> target (why)`."""
    lines = []
    for arrow in arrows(root, packages):
        why = forbidden(arrow)
        if why:
            how = " (by string)" if arrow.by_string else ""
            lines.append(f"{arrow.source}:{arrow.line} -> {arrow.target}{how}: {why}")
    return sorted(lines)


def cycles(root: Path, packages: tuple[str, ...] = PACKAGES) -> list[list[str]]:
    """Every set of modules that reach one another through imports (strongly connected, > 1)."""
    known = modules(root, packages)
    graph = networkx.DiGraph()
    graph.add_nodes_from(known)
    graph.add_edges_from(
        (a.source, a.target) for a in arrows(root, packages)
        if not a.by_string and a.target in known and a.target != a.source
    )
    return sorted(sorted(c) for c in networkx.strongly_connected_components(graph) if len(c) > 1)


IO_MODULES = frozenset({
    "asyncio", "socket", "ssl", "selectors", "nats", "libvirt", "aioquic", "qh3", "h11", "h2", "subprocess",
    "threading", "multiprocessing", "time", "structlog", "random", "secrets", "uuid", "ctypes", "signal", "os",
})
"""What a `core/` module may not import: I/O, clocks, randomness and logging are the glue's (passed in)."""
IO_SHARED = frozenset({"shared.bus", "shared.runtime", "shared.endpoints", "shared.lifecycle", "shared.kv"})
"""The parts of shared/ that talk to NATS: a core never sees the bus."""


def _is_core(module: str) -> bool:
    parts = module.split(".")
    return parts[0] == "services" and len(parts) > 2 and parts[2] == "core"


def _all_imports(root: Path, packages: tuple[str, ...]) -> Iterator[Arrow]:
    """Every import of every module, outside modules included (asyncio, nats, ...)."""
    known = modules(root, packages)
    for module, path in known.items():
        yield from _imports(module, path, known)


def impure(arrow: Arrow) -> str | None:
    """Why an arrow out of a `core/` module breaks the sans-I/O rule, or None."""
    if not _is_core(arrow.source):
        return None
    target = arrow.target
    if target.split(".")[0] in IO_MODULES or any(target == s or target.startswith(s + ".") for s in IO_SHARED):
        return f"a core/ module must not import {target} (I/O, clock or randomness: the glue passes them in)"
    if _service(target) == _service(arrow.source) and not _is_core(target):
        return "a core/ module must not import its service's glue (data flows from the glue into the core)"
    return None


def core_violations(root: Path, packages: tuple[str, ...] = PACKAGES) -> list[str]:
    """One line per import that makes a `services/<name>/core/` module impure."""
    lines = []
    for arrow in _all_imports(root, packages):
        why = impure(arrow)
        if why:
            lines.append(f"{arrow.source}:{arrow.line} -> {arrow.target}: {why}")
    return sorted(lines)
