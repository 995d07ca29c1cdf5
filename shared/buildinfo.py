"""The running version, and the standard collectors every Prometheus registry of ours carries.

`quicfleet_build_info{version=…, python=…}` lets a dashboard show which release each replica
runs during a rolling upgrade; `process_*` gives memory, CPU and file descriptors per process.
"""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

DISTRIBUTION = "quicfleet"


def quicfleet_version() -> str:
    """The installed distribution's version (pyproject.toml), or `unknown` in a bare source tree."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown"


class BuildInfoCollector(Collector):
    """`quicfleet_build_info`: always 1, the labels carry the versions."""

    def __init__(self, service: str) -> None:
        self.labels = {"version": quicfleet_version(), "python": platform.python_version(), "service": service}

    def collect(self) -> list[Metric]:
        family = GaugeMetricFamily("quicfleet_build_info", "quicfleet release and Python version of this process.",
                                   labels=list(self.labels))
        family.add_metric(list(self.labels.values()), 1)
        return [family]


def add_standard_collectors(registry: CollectorRegistry, service: str) -> CollectorRegistry:
    """Register `process_*` and `quicfleet_build_info` on a registry of our own; returns it."""
    ProcessCollector(registry=registry)
    registry.register(BuildInfoCollector(service))
    return registry
