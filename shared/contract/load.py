"""Load reports (balancer -> metrics/scaler) and the fleet load snapshot (metrics -> scaler).

Balancers report cumulative counters and histograms, like Prometheus does, so a lost report
loses no data: the reader takes differences between two reports of the same balancer run.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field, model_validator

from shared.contract.base import Address, Event, EventPart, Name, utcnow

LATENCY_BOUNDS_S: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)
"""Upper bounds (seconds) of the latency histogram buckets; one more bucket holds the rest."""

Count = Annotated[int, Field(ge=0, le=2**63 - 1)]
NonNegative = Annotated[float, Field(ge=0, le=1e12, allow_inf_nan=False)]
Fraction = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]


class LatencyHistogram(EventPart):
    """Counts per bucket of `LATENCY_BOUNDS_S` (len(bounds)+1 entries, the last is +Inf)."""

    counts: Annotated[list[Count], Field(min_length=len(LATENCY_BOUNDS_S) + 1, max_length=len(LATENCY_BOUNDS_S) + 1)]
    sum_s: NonNegative = 0.0

    @classmethod
    def empty(cls) -> LatencyHistogram:
        return cls(counts=[0] * (len(LATENCY_BOUNDS_S) + 1))


class BackendLoad(EventPart):
    """One balancer's view of one backend VM. Counters are cumulative since `started_at`."""

    vm: Name
    outstanding: Count = 0
    requests: Count = 0
    errors: Count = 0
    latency: LatencyHistogram = Field(default_factory=LatencyHistogram.empty)
    routable: bool = True
    draining: bool = False
    flows: Count = Field(0, description="l4: the VM's open flows now (conntrack entries; a gauge, not cumulative).")
    packets: Count = Field(0, description="l4: packets the kernel passed to the VM (cumulative, nft counter).")
    bytes: Count = Field(0, description="l4: bytes the kernel passed to the VM (cumulative, nft counter).")


class BalancerReported(Event):
    """`fleet.balancer.report`: a balancer's per-second load report."""

    balancer: Name
    address: Address | None = Field(default=None, description="Where clients should connect.")
    started_at: datetime
    at: datetime = Field(default_factory=utcnow)
    interval_s: Annotated[float, Field(gt=0, le=3600, allow_inf_nan=False)] = 1.0
    connections: Count = 0
    backends: Annotated[list[BackendLoad], Field(max_length=2000)] = []

    @model_validator(mode="after")
    def _unique_vms(self) -> BalancerReported:
        if len({b.vm for b in self.backends}) != len(self.backends):
            raise ValueError("each backend VM may appear only once in a report")
        return self


class LoadFigures(EventPart):
    """Windowed load numbers, for one VM or for the whole fleet."""

    rps: NonNegative = 0.0
    outstanding: NonNegative = 0.0
    error_rate: Fraction = 0.0
    p50_s: NonNegative | None = None
    p95_s: NonNegative | None = None
    p99_s: NonNegative | None = None
    flows: NonNegative = Field(0.0, description="l4: open flows (connections) over the window, mean of the reports.")


class VmLoad(LoadFigures):
    """Windowed load of one VM across all balancers."""

    vm: Name


class FleetLoaded(LoadFigures, Event):
    """`fleet.load`: the metrics service's periodic snapshot of fleet load over `window_s`."""

    at: datetime = Field(default_factory=utcnow)
    window_s: Annotated[float, Field(gt=0, le=3600, allow_inf_nan=False)]
    balancers: Count = 0
    vms: Annotated[list[VmLoad], Field(max_length=2000)] = []
    source: Name | None = Field(
        None, description="The metrics replica that took it (instance, per-process suffix); the scaler follows one."
    )
    reports: Count = Field(
        0, description="Balancer reports this replica has taken since it started; unchanged since its last: no news."
    )
