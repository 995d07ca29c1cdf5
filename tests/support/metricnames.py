"""Metric names: those our registries expose (read from the code or a live scrape) and those a PromQL query names.

The registries build their families at scrape time (`CounterMetricFamily("quicfleet_x", …)`, or
`PREFIX + "x"` in the balancer), so the names are read from the source with `ast`, without
starting any service; the standard collectors' names come from collecting them once. The
dashboard's and the rules' queries are read from deploy/ here too, for the unit check against the
code and the integration check against live `/metrics` pages.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.parser import text_string_to_metric_families

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"

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


def dashboards() -> list[Path]:
    """The Grafana dashboards shipped in deploy/grafana/."""
    return sorted((DEPLOY / "grafana").glob("*.json"))


def rule_files() -> list[Path]:
    """The Prometheus rule files in deploy/prometheus/ (not the promtool test files beside them)."""
    return sorted(p for p in (DEPLOY / "prometheus").glob("*rules*.yml") if "groups" in yaml.safe_load(p.read_text()))


def dashboard_queries(paths: list[Path] | None = None) -> list[str]:
    """Every panel target's PromQL expression."""
    panels = [panel for path in paths or dashboards() for panel in json.loads(path.read_text())["panels"]]
    return [target["expr"] for panel in panels for target in panel.get("targets", [])]


def rule_queries(paths: list[Path] | None = None) -> list[str]:
    """Every recording and alerting rule's expression."""
    groups = [group for path in paths or rule_files() for group in yaml.safe_load(path.read_text())["groups"]]
    return [rule["expr"] for group in groups for rule in group["rules"]]


_FAMILY_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
                    "summary": ("", "_sum", "_count", "_created"), "info": ("_info",), "gaugehistogram": (
                        "_bucket", "_gsum", "_gcount")}


def scraped_names(text: str) -> tuple[set[str], set[str]]:
    """From one `/metrics` page: the series names a query may use (declared families, with the suffixes their
    type gives: a counter's `_total`, a histogram's `_bucket`/`_sum`/`_count`), and those with a sample now."""
    declared: set[str] = set()
    sampled: set[str] = set()
    for family in text_string_to_metric_families(text):
        declared |= {family.name + suffix for suffix in _FAMILY_SUFFIXES.get(family.type, ("",))}
        sampled |= {sample.name for sample in family.samples}
    return declared | sampled, sampled
