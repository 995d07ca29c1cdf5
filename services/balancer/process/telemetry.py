"""Prometheus metrics of one balancer process (served by `process.endpoint` on a port of their own).

The data plane counts into plain ints and dicts (`Telemetry`); a custom collector turns them
into metric families only when Prometheus scrapes. A labelled prometheus_client `.inc()` takes
a lock and a label lookup per call, several times the cost of a dict update, and this runs per
request. Each balancer has its own `CollectorRegistry`, so several balancers in one process
(the tests) never share or clash over series.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from services.balancer.core.l4plane import FlowFigures
from shared.buildinfo import add_standard_collectors
from shared.contract.load import LATENCY_BOUNDS_S
from shared.histogram import bucket_of
from shared.throttle import LineThrottle

log = structlog.get_logger("balancer.telemetry")

PREFIX = "quicfleet_balancer_"
CODE_CLASSES = ("none", "1xx", "2xx", "3xx", "4xx", "5xx")
"""`code_class` label by status // 100; "none" when no status was sent (a reset before the response)."""


def code_class(status: int) -> str:
    return CODE_CLASSES[status // 100] if 100 <= status < 600 else CODE_CLASSES[0]


def _never() -> bool:
    return False


def _nothing() -> Mapping[str, int]:
    return {}


class Telemetry:
    """The balancer's counters, updated by the data plane (router, exchanges, connections).

    Two figures live elsewhere and are read at scrape time from the sources given here (the
    bootstrap wires them): whether the backend table is in `panic` now, and the malformed events
    the bus dropped per subject (`rejected_inputs`).
    """

    def __init__(
        self, panic: Callable[[], bool] = _never, rejected_inputs: Callable[[], Mapping[str, int]] = _nothing,
        flows: Callable[[], Mapping[str, FlowFigures]] | None = None,
    ) -> None:
        self.requests: dict[tuple[str, str, str], int] = {}
        """Finished requests by (vm, code_class, protocol); vm "" when no VM was tried."""
        self.retries = 0
        self.ejections: dict[str, int] = {}
        self.identity_mismatches: dict[str, int] = {}
        """Responses (to checks or proxied requests) that carried another VM's UUID or none, by vm."""
        self.health_transitions = {"healthy": 0, "unhealthy": 0}
        self.open_connections = 0
        self.refused_connections: Counter[str] = Counter()
        """Connections refused on arrival, by reason: `limit` (listen_max_connections), `per_ip`."""
        self._refusal_lines = LineThrottle()
        self.refused_requests: Counter[str] = Counter()
        """Requests answered by the balancer itself and never forwarded, by the request model's reason
        (`bad_field_value`, `content_length_invalid`, `transfer_coding_with_length`, ...)."""
        self._request_lines = LineThrottle()
        self.handshakes = 0
        self.retry_packets = 0
        self.memory_returns = 0
        """Times freed memory was given back to the OS after a connection storm (`reclaim`)."""
        self.response_bytes = 0
        self.latency_counts = [0] * (len(LATENCY_BOUNDS_S) + 1)
        self.latency_sum_s = 0.0
        self.panic = panic
        """Whether the backend table is in panic now."""
        self.panics = 0
        self.rejected_inputs = rejected_inputs
        """Malformed events dropped per subject (the service's bus's throttle totals)."""
        self.flows = flows
        """l4 mode: the kernel's latest flows, packets and bytes per VM (None in l7: no such series)."""

    # request level: the router calls these
    def request_done(self, vm: str, status: int, protocol: str, bytes_sent: int, seconds: float) -> None:
        key = (vm, code_class(status), protocol)
        self.requests[key] = self.requests.get(key, 0) + 1
        self.response_bytes += bytes_sent
        self.latency_counts[bucket_of(seconds)] += 1
        self.latency_sum_s += max(0.0, seconds)

    def retried(self) -> None:
        self.retries += 1

    def ejected(self, vm: str) -> None:
        self.ejections[vm] = self.ejections.get(vm, 0) + 1

    def identity_mismatched(self, vm: str) -> None:
        self.identity_mismatches[vm] = self.identity_mismatches.get(vm, 0) + 1

    def health_changed(self, vm: str, healthy: bool) -> None:
        self.health_transitions["healthy" if healthy else "unhealthy"] += 1

    def panic_entered(self) -> None:
        self.panics += 1

    def forget(self, vm: str) -> None:
        """A VM is gone for good: drop its series, so an elastic fleet does not grow them forever."""
        self.ejections.pop(vm, None)
        self.identity_mismatches.pop(vm, None)
        for key in [k for k in self.requests if k[0] == vm]:
            del self.requests[key]

    # connection level: the listener and its connections call these
    def connection_opened(self) -> None:
        self.open_connections += 1

    def connection_closed(self) -> None:
        self.open_connections -= 1

    def connection_refused(self, reason: str, ip: str, now: float) -> None:
        """Count a refused connection; log it, at most a few lines per reason and 10 s (a storm is one line)."""
        self.refused_connections[reason] += 1
        left_out = self._refusal_lines.admit(reason, now)
        if left_out is not None:
            log.warning("balancer.connection_refused", reason=reason, ip=ip, left_out=left_out)

    def request_refused(self, reason: str, ip: str, now: float) -> None:
        """Count a malformed or refused request; log it rate-limited per reason (a flood of one kind is one line)."""
        self.refused_requests[reason] += 1
        left_out = self._request_lines.admit(reason, now)
        if left_out is not None:
            log.warning("balancer.request_refused", reason=reason, ip=ip, left_out=left_out)

    def handshake_done(self) -> None:
        self.handshakes += 1

    def retry_sent(self) -> None:
        self.retry_packets += 1

    def memory_returned(self) -> None:
        self.memory_returns += 1


class BalancerCollector(Collector):
    """Reads a `Telemetry` at scrape time."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.t = telemetry

    def collect(self) -> Iterator[Metric]:
        yield requests_family(self.t)
        yield from counter_families(self.t)
        yield from gauge_families(self.t)
        yield latency_family(self.t)
        yield rejections_family(self.t)
        if self.t.flows is not None:
            yield from l4_families(self.t.flows())


def requests_family(t: Telemetry) -> Metric:
    family = CounterMetricFamily(
        PREFIX + "requests", "Finished client requests.", labels=["vm", "code_class", "protocol"]
    )
    for (vm, klass, protocol), count in sorted(t.requests.items()):
        family.add_metric([vm, klass, protocol], count)
    return family


def counter_families(t: Telemetry) -> Iterator[Metric]:
    """The unlabelled counters, the ejections and identity mismatches per VM, and the health transitions."""
    yield CounterMetricFamily(PREFIX + "retries", "Requests retried on another VM.", value=t.retries)
    yield CounterMetricFamily(PREFIX + "handshakes", "Client QUIC handshakes completed.", value=t.handshakes)
    yield CounterMetricFamily(PREFIX + "retry_packets", "QUIC Retry packets sent.", value=t.retry_packets)
    yield CounterMetricFamily(PREFIX + "response_bytes", "Response body bytes sent to clients.", value=t.response_bytes)
    yield CounterMetricFamily(PREFIX + "panics", "Times the backend table entered panic.", value=t.panics)
    yield CounterMetricFamily(
        PREFIX + "memory_returns", "Times freed memory was given back to the OS after a connection storm.",
        value=t.memory_returns,
    )
    ejections = CounterMetricFamily(PREFIX + "ejections", "Passive ejections of a VM.", labels=["vm"])
    for vm, count in sorted(t.ejections.items()):
        ejections.add_metric([vm], count)
    yield ejections
    mismatches = CounterMetricFamily(
        PREFIX + "identity_mismatches",
        "Responses at a VM's address that carried another VM's UUID or none.",
        labels=["vm"],
    )
    for vm, count in sorted(t.identity_mismatches.items()):
        mismatches.add_metric([vm], count)
    yield mismatches
    refused = CounterMetricFamily(
        PREFIX + "refused_connections", "Client connections refused on arrival, by limit.", labels=["reason"]
    )
    for reason, count in sorted(t.refused_connections.items()):
        refused.add_metric([reason], count)
    yield refused
    requests = CounterMetricFamily(
        PREFIX + "refused_requests", "Requests the balancer answered itself and never forwarded, by reason.",
        labels=["reason"],
    )
    for reason, count in sorted(t.refused_requests.items()):
        requests.add_metric([reason], count)
    yield requests
    transitions = CounterMetricFamily(PREFIX + "health_transitions", "Active-check state changes.", labels=["to"])
    for to, count in sorted(t.health_transitions.items()):
        transitions.add_metric([to], count)
    yield transitions


def gauge_families(t: Telemetry) -> Iterator[Metric]:
    yield GaugeMetricFamily(PREFIX + "open_connections", "Client connections open now.", value=t.open_connections)
    yield GaugeMetricFamily(
        PREFIX + "panic", "1 while too few VMs are usable and every non-draining one gets requests.",
        value=1 if t.panic() else 0,
    )


def latency_family(t: Telemetry) -> Metric:
    """Request duration on the contract's fixed buckets (the same as the load reports)."""
    family = HistogramMetricFamily(PREFIX + "request_duration_seconds", "Time from request to its end.")
    bounds = [str(float(b)) for b in LATENCY_BOUNDS_S] + ["+Inf"]
    running, buckets = 0, []
    for bound, count in zip(bounds, t.latency_counts, strict=True):
        running += count
        buckets.append((bound, float(running)))
    family.add_metric([], buckets, sum_value=t.latency_sum_s)
    return family


def rejections_family(t: Telemetry) -> Metric:
    """The same series the metrics service exposes for the scaler and provisioner, for this balancer."""
    family = CounterMetricFamily(
        "quicfleet_rejected_inputs", "Rejected input: commands answered invalid and malformed events dropped.",
        labels=["service", "subject"],
    )
    for subject, count in sorted(t.rejected_inputs().items()):
        family.add_metric(["balancer", subject], count)
    return family


def l4_families(flows: Mapping[str, FlowFigures]) -> Iterator[Metric]:
    """Per VM in l4 mode: its open flows (conntrack), and the packets and bytes the kernel passed to it (nft)."""
    open_flows = GaugeMetricFamily(PREFIX + "vm_flows", "l4: open flows (conntrack entries) to a VM.", labels=["vm"])
    packets = CounterMetricFamily(PREFIX + "vm_packets", "l4: packets passed to a VM by the kernel.", labels=["vm"])
    sent = CounterMetricFamily(PREFIX + "vm_bytes", "l4: bytes passed to a VM by the kernel.", labels=["vm"])
    for vm, figures in sorted(flows.items()):
        open_flows.add_metric([vm], figures.entries)
        packets.add_metric([vm], figures.packets)
        sent.add_metric([vm], figures.bytes)
    yield from (open_flows, packets, sent)


def make_registry(telemetry: Telemetry) -> CollectorRegistry:
    """The balancer's counters, and `process_*` and `quicfleet_build_info{service="balancer"}`."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BalancerCollector(telemetry))
    return add_standard_collectors(registry, "balancer")
