"""The provisioner's Prometheus metrics: boot and resume times, libvirt errors, VMs by state, the warm pool.

Off unless `provisioner_metrics_port` is set; then a small aiohttp server on loopback (unless
`provisioner_metrics_host` says otherwise) serves `/metrics` from a registry of its own. The
figures come from where they already pass: every published VM state goes through `observe`
(the table's one writer) and every libvirt call through `CountingHypervisor`; the VMs by state
are the states last published, so they never drift from what the rest of the fleet was told.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from typing import Any, cast

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from services.provisioner.core.machine import VmEntry
from services.provisioner.core.ports import Hypervisor, HypervisorError
from shared.buildinfo import add_standard_collectors
from shared.contract.events import LIVE_STATES, VmState

log = structlog.get_logger("provisioner.telemetry")

PREFIX = "quicfleet_provisioner_"
BOOT_BOUNDS_S = (1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 300.0)
"""From `requested` to `ready` or `pooled`: a clone, a boot and the first HTTP/3 answer."""
RESUME_BOUNDS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
"""From a take out of the warm pool to `ready`: resume and a readiness check again."""


class Timings:
    """A histogram on fixed bounds kept as plain counts (read by the collector at scrape time)."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum_s = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[next((i for i, b in enumerate(self.bounds) if seconds <= b), len(self.bounds))] += 1
        self.sum_s += max(0.0, seconds)

    def fill(self, family: HistogramMetricFamily) -> Metric:
        """`family` (named where it is made, so the names stay greppable) with these counts as cumulative buckets."""
        running, buckets = 0, []
        for bound, count in zip([str(b) for b in self.bounds] + ["+Inf"], self.counts, strict=True):
            running += count
            buckets.append((bound, float(running)))
        family.add_metric([], buckets, sum_value=self.sum_s)
        return family


class ProvisionerTelemetry:
    """Counts of one provisioner host, fed by the states it publishes and the libvirt calls that fail."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.boot = Timings(BOOT_BOUNDS_S)
        self.resume = Timings(RESUME_BOUNDS_S)
        self.libvirt_errors: Counter[tuple[str, str]] = Counter()
        """libvirt calls that failed, by (operation, code)."""
        self._began: dict[str, tuple[str, datetime]] = {}
        """VMs on their way to `ready`: whether a boot or a resume, and since when."""
        self.states: dict[str, VmState] = {}
        """Each live VM's last published state."""

    def observe(self, entry: VmEntry) -> None:
        """A VM entered `entry.state` (as published): start or end its boot or resume clock."""
        before = self.states.get(entry.name)
        self.states[entry.name] = entry.state
        if entry.state is VmState.REQUESTED:
            self._began[entry.name] = ("boot", entry.created_at)
        elif entry.state is VmState.BOOTING and before is VmState.POOLED:
            self._began[entry.name] = ("resume", entry.since)
        elif entry.state in (VmState.READY, VmState.POOLED) and entry.name in self._began:
            kind, since = self._began.pop(entry.name)
            (self.boot if kind == "boot" else self.resume).observe((entry.since - since).total_seconds())
        elif entry.state in (VmState.FAILED, VmState.DESTROYED):
            self._began.pop(entry.name, None)
            self.states.pop(entry.name, None)

    def libvirt_failed(self, operation: str, error: HypervisorError) -> None:
        self.libvirt_errors[(operation, error.code)] += 1


class ProvisionerCollector(Collector):
    """Turns a `ProvisionerTelemetry` into metric families when Prometheus scrapes."""

    def __init__(self, telemetry: ProvisionerTelemetry) -> None:
        self.t = telemetry

    def collect(self) -> Iterator[Metric]:
        t = self.t
        yield t.boot.fill(HistogramMetricFamily(PREFIX + "boot_seconds", "From a VM's request to ready or pooled."))
        yield t.resume.fill(HistogramMetricFamily(PREFIX + "resume_seconds", "Time from a pool take to ready."))
        errors = CounterMetricFamily(PREFIX + "libvirt_errors", "libvirt calls that failed, by operation and code.",
                                     labels=["operation", "code"])
        for (operation, code), count in sorted(t.libvirt_errors.items()):
            errors.add_metric([operation, code], count)
        yield errors
        yield from state_families(t.host, list(t.states.values()))


def state_families(host: str, states: list[VmState]) -> Iterator[Metric]:
    """This host's live VMs by state, and its warm pool on its own (what `quicfleet_vms` sums over hosts)."""
    counts = Counter(s for s in states if s in LIVE_STATES)
    vms = GaugeMetricFamily(PREFIX + "vms", "This host's live VMs by state.", labels=["host", "state"])
    for state in sorted(LIVE_STATES):
        vms.add_metric([host, state.value], counts.get(state, 0))
    yield vms
    yield _pool(host, counts.get(VmState.POOLED, 0))


def _pool(host: str, count: int) -> Metric:
    family = GaugeMetricFamily(PREFIX + "pool", "VMs in this host's warm pool (booted, paused).", labels=["host"])
    family.add_metric([host], count)
    return family


class CountingHypervisor:
    """The hypervisor port with every failed call counted by operation and libvirt code, then raised as it was."""

    def __init__(self, hv: Hypervisor, telemetry: ProvisionerTelemetry) -> None:
        self._hv, self._telemetry = hv, telemetry

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._hv, name)
        if not callable(attribute):
            return attribute

        def counted(*args: Any, **kwargs: Any) -> Any:
            try:
                return attribute(*args, **kwargs)
            except HypervisorError as error:
                self._telemetry.libvirt_failed(name, error)
                raise

        return counted


def counting(hv: Hypervisor, telemetry: ProvisionerTelemetry) -> Hypervisor:
    """`hv` behind a `CountingHypervisor` (typed as the port it stands in for)."""
    return cast(Hypervisor, CountingHypervisor(hv, telemetry))


def make_registry(telemetry: ProvisionerTelemetry) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ProvisionerCollector(telemetry))
    return add_standard_collectors(registry, "provisioner")
