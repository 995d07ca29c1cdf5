"""The observability kit an operator imports: the recorded series its panels and alerts use are recorded, and
every service's registry carries `process_*` and `quicfleet_build_info` with its own service label.

tests/unit/test_observability_kit.py and tests/integration/observability/test_live_names.py check the raw
`quicfleet_*` names; a recorded series (`quicfleet:errors:ratio_rate5m`) is no raw name, and promtool accepts a
query of one nobody records, so a typo there would leave a panel or an alert silently empty.
"""

from __future__ import annotations

import re
from typing import NoReturn

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from services.balancer.process.telemetry import Telemetry
from services.balancer.process.telemetry import make_registry as balancer_registry
from services.metrics.exposition import make_registry as metrics_registry
from services.metrics.state import MetricsState
from services.provisioner.telemetry import ProvisionerTelemetry
from services.provisioner.telemetry import make_registry as provisioner_registry
from services.scaler.settings import ScalerSettings
from services.scaler.telemetry import ScalerTelemetry
from tests.support.metricnames import dashboard_queries, rule_files, rule_queries

RECORDED = re.compile(r"\b[a-z_][a-z0-9_]*:[a-z0-9_:]+\b")
"""A recording rule's name (level:metric:operations): the only series names with a colon."""
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')


def recorded_by_the_rules() -> set[str]:
    groups = [group for path in rule_files() for group in yaml.safe_load(path.read_text())["groups"]]
    return {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}


def recorded_names_in(expr: str) -> set[str]:
    """The recorded series a PromQL expression reads (label values and `[5m:1m]` subqueries left out)."""
    return set(RECORDED.findall(_STRINGS.sub('""', expr)))


def test_every_recorded_series_a_panel_or_rule_reads_is_recorded() -> None:
    """Each `level:metric:op` name in the dashboard and the rules is the `record:` of a rule in deploy/prometheus."""
    used = {name for expr in dashboard_queries() + rule_queries() for name in recorded_names_in(expr)}
    assert used, "the dashboard and the alerts read no recorded series: the check would be vacuous"
    assert sorted(used - recorded_by_the_rules()) == []


def test_a_misspelt_recorded_series_would_be_caught() -> None:
    """The check is not vacuous: a query of a series no rule records is found."""
    query = 'quicfleet:errors:ratio_rate5n > 0.05 and on() quicfleet_vms{state="ready:x"} > 0'
    assert recorded_names_in(query) - recorded_by_the_rules() == {"quicfleet:errors:ratio_rate5n"}


class _NotStarted:
    """A scaler before its start: not leading, and its lease and store not there yet."""

    leading = False

    @property
    def lease(self) -> NoReturn:
        raise RuntimeError("not started")

    @property
    def store(self) -> NoReturn:
        raise RuntimeError("not started")


def registries() -> dict[str, CollectorRegistry]:
    """Each service's /metrics registry, made as its bootstrap makes it."""
    scaler = ScalerTelemetry(ScalerSettings(scaler_id="kit", scaler_metrics_port=None), _NotStarted())
    return {"balancer": balancer_registry(Telemetry()),
            "metrics": metrics_registry(MetricsState(window_s=10, history_s=60, interval_s=1)),
            "scaler": scaler.registry,
            "provisioner": provisioner_registry(ProvisionerTelemetry("host-a"))}


@pytest.mark.parametrize("service", ["balancer", "metrics", "scaler", "provisioner"])
def test_every_registry_has_process_and_build_info_with_its_service(service: str) -> None:
    """The service's page has process memory, CPU and file descriptors, and build_info = 1 labelled with it."""
    text = generate_latest(registries()[service]).decode()
    samples = {sample.name: sample for family in text_string_to_metric_families(text) for sample in family.samples}
    assert {"process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds"} <= set(samples)
    info = samples["quicfleet_build_info"]
    assert info.value == 1 and info.labels["service"] == service and info.labels["version"]
