"""The Grafana dashboard and the Prometheus rules name only metrics our registries expose, and cover the fleet."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.metricnames import dashboard_queries, exposed_names, families_in, query_names, rule_queries

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "quicfleet-dashboard.json"


def test_the_registry_parser_reads_real_families() -> None:
    """The parser finds the metrics service's histogram and the balancer's PREFIX-built counters."""
    names = exposed_names(ROOT)
    assert {"quicfleet_request_duration_seconds_bucket", "quicfleet_vms", "quicfleet_build_info",
            "process_resident_memory_bytes"} <= names
    assert "quicfleet_balancer_ejections_total" in families_in(ROOT / "services/balancer/process/telemetry.py")


def test_every_metric_a_dashboard_or_rule_names_exists() -> None:
    """No panel or rule queries a metric name that no registry in the code exposes."""
    known = exposed_names(ROOT)
    named = {name for expr in dashboard_queries() + rule_queries() for name in query_names(expr)}
    assert named, "no metric names found in the queries"
    assert sorted(named - known) == []


def test_a_misspelt_metric_would_be_caught() -> None:
    """The name check is not vacuous: a query with a typo names a metric that does not exist."""
    assert query_names('sum(rate(quicfleet_backend_request_total{job="quicfleet_x"}[1m]))') == {
        "quicfleet_backend_request_total"}
    assert "quicfleet_backend_request_total" not in exposed_names(ROOT)


def test_the_dashboard_covers_what_an_operator_watches() -> None:
    """Rate, errors, latency from the histogram, VMs vs desired, pool, ejections, refusals and decisions are panels."""
    named = {name for expr in dashboard_queries() for name in query_names(expr)}
    assert {"quicfleet_backend_requests_total", "quicfleet_backend_errors_total",
            "quicfleet_request_duration_seconds_bucket", "quicfleet_vms", "quicfleet_desired_vms",
            "quicfleet_balancer_ejections_total", "quicfleet_balancer_refused_connections_total",
            "quicfleet_scaling_decisions_total"} <= named
    assert any('state="pooled"' in expr for expr in dashboard_queries())
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
