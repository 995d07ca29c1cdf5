"""Builders of synthetic balancer reports, shared by the metrics unit and integration tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.contract.load import LATENCY_BOUNDS_S, BackendLoad, BalancerReported, LatencyHistogram
from shared.histogram import bucket_of

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def histogram(latencies: dict[float, int]) -> LatencyHistogram:
    """A histogram holding `count` requests of each `latency` (seconds)."""
    counts = [0] * (len(LATENCY_BOUNDS_S) + 1)
    total = 0.0
    for latency, count in latencies.items():
        counts[bucket_of(latency)] += count
        total += latency * count
    return LatencyHistogram(counts=counts, sum_s=total)


def backend(vm: str, requests: int, errors: int = 0, outstanding: int = 0, latency_s: float = 0.004) -> BackendLoad:
    """One VM's cumulative load with every request taking `latency_s`."""
    return BackendLoad(
        vm=vm, requests=requests, errors=errors, outstanding=outstanding, latency=histogram({latency_s: requests})
    )


def report(
    balancer: str, at_s: float, backends: list[BackendLoad], started_s: float = 0.0, base: datetime = T0
) -> BalancerReported:
    """A report taken `at_s` seconds after `base` by a run that started `started_s` after `base`."""
    return BalancerReported(
        balancer=balancer,
        started_at=base + timedelta(seconds=started_s),
        at=base + timedelta(seconds=at_s),
        backends=backends,
    )
