"""Metric names: those our registries expose (read from the code) and those a PromQL query names.

The registries build their families at scrape time (`CounterMetricFamily("quicfleet_x", …)`, or
`PREFIX + "x"` in the balancer), so the names are read from the source with `ast`, without
starting any service; the standard collectors' names come from collecting them once.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest

SUFFIXES = {"CounterMetricFamily": ("_total",), "HistogramMetricFamily": ("_bucket", "_sum", "_count"),
            "GaugeMetricFamily": ("",), "SummaryMetricFamily": ("_sum", "_count", "")}
_NAME = re.compile(r"\b((?:quicfleet|process)_[a-z0-9_]+)\b")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')


def _constants(tree: ast.Module) -> dict[str, str]:
    """Module-level `NAME = "text"` assignments (the balancer's PREFIX)."""
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            found.update({t.id: node.value.value for t in node.targets if isinstance(t, ast.Name)})
    return found


def _text(node: ast.expr, constants: dict[str, str]) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _text(node.left, constants), _text(node.right, constants)
        return left + right if left is not None and right is not None else None
    return None


def families_in(path: Path) -> set[str]:
    """Exposed series names of every `*MetricFamily(name, …)` built in one module."""
    tree = ast.parse(path.read_text())
    constants, names = _constants(tree), set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and node.args):
            continue
        kind = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
        name = _text(node.args[0], constants) if kind in SUFFIXES else None
        if name is not None:
            names |= {name + suffix for suffix in SUFFIXES[str(kind)]}
    return names


def exposed_names(root: Path) -> set[str]:
    """Every series name the services' and shared registries can expose, and the process collector's."""
    names: set[str] = set()
    for path in [*root.glob("services/**/*.py"), *root.glob("shared/**/*.py")]:
        names |= families_in(path)
    registry = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=registry)
    names |= {line.split()[2] for line in generate_latest(registry).decode().splitlines() if line.startswith("# TYPE")}
    names |= {n + "_total" for n in names if n == "process_cpu_seconds"}
    return names


def query_names(expr: str) -> set[str]:
    """The quicfleet_* and process_* metric names a PromQL expression names (string literals ignored)."""
    return set(_NAME.findall(_STRING.sub('""', expr)))
