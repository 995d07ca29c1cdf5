"""The scaler's Prometheus metrics: which replica leads, its epoch, the desired size, the decisions it made.

Off unless `scaler_metrics_port` is set; then a small aiohttp server on loopback (unless
`scaler_metrics_host` says otherwise) serves `/metrics`. Leader, epoch and desired size are read
from the service when Prometheus scrapes (so a scrape never shows a stale copy); decisions are
counted as the leader announces them. Every replica serves its own: `max(quicfleet_scaler_leader)`
over the replicas is 1 while some replica leads, and a standby's decisions stay at zero.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Protocol

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from services.scaler.settings import ScalerSettings
from shared.buildinfo import add_standard_collectors
from shared.contract.events import ScalingDecided
from shared.contract.rollout import RolloutState
from shared.metricsserver import MetricsServer

log = structlog.get_logger("scaler.telemetry")

PREFIX = "quicfleet_scaler_"


class _Epoch(Protocol):
    @property
    def epoch(self) -> int: ...


class _Desired(Protocol):
    @property
    def desired(self) -> int: ...


class _Store(Protocol):
    @property
    def current(self) -> _Desired: ...


class Watched(Protocol):
    """What the metrics read of a scaler (`lease` and `store` raise RuntimeError before it started)."""

    @property
    def leading(self) -> bool: ...

    @property
    def lease(self) -> _Epoch: ...

    @property
    def store(self) -> _Store: ...


class ScalerTelemetry(Collector):
    """This replica's figures, and the server of its `/metrics` when a port is set."""

    def __init__(self, settings: ScalerSettings, scaler: Watched,
                 rollout: Callable[[], RolloutState | None] = lambda: None) -> None:
        """`rollout`: the rollout state this replica knows (from KV), read at scrape time."""
        self.scaler_id = settings.scaler_id
        self.scaler = scaler
        self.rollout = rollout
        self.decisions: Counter[str] = Counter()
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        self.registry = add_standard_collectors(registry, "scaler")
        port = settings.scaler_metrics_port
        self.server = MetricsServer(self.registry, settings.scaler_metrics_host, port) if port is not None else None

    def decided(self, event: ScalingDecided) -> None:
        self.decisions[event.signal or "none"] += 1

    async def start(self) -> None:
        if self.server is not None:
            await self.server.start()

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()

    def collect(self) -> Iterator[Metric]:
        leader = GaugeMetricFamily(PREFIX + "leader", "1 while this replica leads (holds the lease).",
                                   labels=["scaler"])
        leader.add_metric([self.scaler_id], 1 if self.scaler.leading else 0)
        yield leader
        try:
            epoch, desired = self.scaler.lease.epoch, self.scaler.store.current.desired
        except RuntimeError:  # not started yet
            epoch, desired = 0, 0
        yield GaugeMetricFamily(PREFIX + "epoch", "The lease epoch this replica last saw.", value=epoch)
        yield GaugeMetricFamily(PREFIX + "desired_vms", "The desired size in the store, as this replica read it.",
                                value=desired)
        decisions = CounterMetricFamily(
            PREFIX + "decisions", "Decisions this replica announced while leading, by the signal that drove them "
            "(`none`: a command or a replacement).", labels=["signal"],
        )
        for signal, count in sorted(self.decisions.items()):
            decisions.add_metric([signal], count)
        yield decisions
        yield rollout_family(self.rollout())


def rollout_family(state: RolloutState | None) -> Metric:
    """The template rollout as this replica knows it: 1 on its phase (declared empty before the first one), so a
    dashboard shows which versions it moves between and where it stands, a rollback with its phase."""
    family = GaugeMetricFamily(PREFIX + "rollout", "The template rollout this replica knows: 1 on its phase.",
                               labels=["phase", "old_version", "new_version"])
    if state is not None:
        family.add_metric([state.phase.value, state.old_version or "", state.new_version], 1)
    return family
