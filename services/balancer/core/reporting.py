"""The per-second load report: a snapshot of the backend counters as a contract message.

Building it only reads counters the request path already keeps, so reporting adds no work per
request; the report is cumulative, so a lost one loses nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from services.balancer.core.backends import Backend
from shared.contract.load import BackendLoad, BalancerReported, LatencyHistogram


def backend_load(backend: Backend, now: float) -> BackendLoad:
    """One backend's counters as the contract's `BackendLoad`."""
    return BackendLoad(
        vm=backend.vm,
        outstanding=max(0, backend.outstanding),
        requests=backend.requests,
        errors=backend.errors,
        latency=LatencyHistogram(counts=list(backend.latency_counts), sum_s=backend.latency_sum_s),
        routable=backend.routable(now),
        draining=backend.draining,
    )


def build_report(
    balancer: str,
    address: str | None,
    started_at: datetime,
    interval_s: float,
    connections: int,
    backends: Iterable[Backend],
    now: float,
) -> BalancerReported:
    """The `BalancerReported` message for this moment."""
    return BalancerReported(
        balancer=balancer,
        address=address,
        started_at=started_at,
        interval_s=interval_s,
        connections=connections,
        backends=[backend_load(b, now) for b in backends],
    )
