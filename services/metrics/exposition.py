"""`/metrics`: a prometheus-client collector that reads the metrics core at scrape time.

A custom collector (rather than Counter/Gauge objects updated on every report) means the
exposition is always exactly the aggregate state: counters are the sums of what balancers
reported, and nothing has to be kept in step by hand.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from services.metrics.aggregate import VmTotals
from services.metrics.state import MetricsState
from shared.buildinfo import add_standard_collectors
from shared.contract.forecast import ForecastMade
from shared.contract.load import LATENCY_BOUNDS_S, FleetLoaded

QUANTILES = (("0.5", "p50_s"), ("0.95", "p95_s"), ("0.99", "p99_s"))


class FleetCollector(Collector):
    """Every quicfleet metric, read from one `MetricsState`."""

    def __init__(self, state: MetricsState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        totals = self.state.aggregator.totals()
        yield from backend_families(totals)
        yield latency_family(totals)
        yield from fleet_families(self.state)
        yield rejections_family(self.state.rejections.totals())
        if self.state.latest is not None:
            yield from window_families(self.state.latest)


def backend_families(totals: dict[str, VmTotals]) -> Iterable[Metric]:
    """Per-VM request and error counters and current outstanding requests."""
    requests = CounterMetricFamily(
        "quicfleet_backend_requests", "Requests balancers sent to a backend VM.", labels=["vm"]
    )
    errors = CounterMetricFamily("quicfleet_backend_errors", "Failed requests to a backend VM.", labels=["vm"])
    outstanding = GaugeMetricFamily(
        "quicfleet_backend_outstanding_requests", "Requests in flight to a backend VM now.", labels=["vm"]
    )
    for vm, t in sorted(totals.items()):
        requests.add_metric([vm], t.requests)
        errors.add_metric([vm], t.errors)
        outstanding.add_metric([vm], t.outstanding)
    return (requests, errors, outstanding)


def latency_family(totals: dict[str, VmTotals]) -> Metric:
    """The request duration histogram per VM, on the contract's fixed buckets."""
    family = HistogramMetricFamily(
        "quicfleet_request_duration_seconds", "Time from request to response through the balancer.", labels=["vm"]
    )
    bounds = [str(float(b)) for b in LATENCY_BOUNDS_S] + ["+Inf"]
    for vm, t in sorted(totals.items()):
        running, buckets = 0, []
        for bound, count in zip(bounds, t.counts, strict=True):
            running += count
            buckets.append((bound, float(running)))
        family.add_metric([vm], buckets, sum_value=t.sum_s)
    return family


def fleet_families(state: MetricsState) -> Iterable[Metric]:
    """Fleet shape: VMs per state, desired size, live balancers, decisions seen."""
    vms = GaugeMetricFamily("quicfleet_vms", "VMs of the fleet in each state.", labels=["state"])
    for name, count in state.fleet.state_counts().items():
        vms.add_metric([name], count)
    yield vms
    if state.fleet.desired is not None:
        yield GaugeMetricFamily("quicfleet_desired_vms", "The scaler's desired fleet size.", value=state.fleet.desired)
    yield GaugeMetricFamily(
        "quicfleet_balancers", "Balancers currently reporting load.", value=len(state.aggregator.runs)
    )
    yield CounterMetricFamily(
        "quicfleet_scaling_decisions", "Scaling decisions seen since this replica started.",
        value=state.fleet.decisions_seen,
    )
    yield from forecast_families(state.forecast)


def forecast_families(event: ForecastMade | None) -> Iterable[Metric]:
    """The scaler's forecast (its next points, its upper value over the lead, what it would do) and its error.

    Before any forecast arrives the load family is declared empty and `working` is 0, so a dashboard's
    "forecast vs actual" panel names series that exist from the start (and shows no forecast, truly)."""
    point = GaugeMetricFamily("quicfleet_forecast_load", "The scaler's load forecast for the next minutes, in "
                              "the policy signal's unit.", labels=["quantile"])
    if event is None:
        yield point
        yield GaugeMetricFamily("quicfleet_forecast_working", "1 when the forecast works (not off, held or "
                                "without history), else 0.", value=0.0)
        return
    if event.points:
        point.add_metric(["point"], event.points[0].point)
        point.add_metric(["upper"], event.points[0].upper)
    yield point
    if event.error is not None:
        yield GaugeMetricFamily("quicfleet_forecast_error", "The forecast's mean absolute error over the last day "
                                "divided by the mean load (one minute ahead).", value=event.error)
    yield GaugeMetricFamily("quicfleet_forecast_working", "1 when the forecast works (not off, held or "
                            "without history), else 0.", value=1.0 if event.working else 0.0)
    if event.would is not None:
        yield GaugeMetricFamily("quicfleet_forecast_would_vms", "The fleet size the forecast asks for where it "
                                "differs from the reactive one.", value=event.would)


def rejections_family(totals: Mapping[tuple[str, str], int]) -> Metric:
    """Commands answered `invalid` and malformed events dropped, per service and subject (`rejections`)."""
    family = CounterMetricFamily(
        "quicfleet_rejected_inputs", "Rejected input: commands answered invalid and malformed events dropped.",
        labels=["service", "subject"],
    )
    for (service, subject), count in sorted(totals.items()):
        family.add_metric([service, subject], count)
    return family


def window_families(snapshot: FleetLoaded) -> Iterable[Metric]:
    """The latest `fleet.load` numbers (sliding window), as gauges."""
    yield GaugeMetricFamily(
        "quicfleet_fleet_requests_per_second", "Fleet-wide requests per second over the window.", value=snapshot.rps
    )
    yield GaugeMetricFamily(
        "quicfleet_fleet_error_ratio", "Fleet-wide share of failed requests over the window.", value=snapshot.error_rate
    )
    quantiles = GaugeMetricFamily(
        "quicfleet_fleet_request_duration_window_seconds",
        "Fleet-wide latency quantiles over the window.",
        labels=["quantile"],
    )
    for label, attr in QUANTILES:
        value = getattr(snapshot, attr)
        if value is not None:
            quantiles.add_metric([label], value)
    yield quantiles


def make_registry(state: MetricsState) -> CollectorRegistry:
    """A registry of our own (not the process-global one), so replicas in one process never clash."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(state))
    return add_standard_collectors(registry, "metrics")  # process_* and quicfleet_build_info


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition of a registry."""
    return generate_latest(registry)
