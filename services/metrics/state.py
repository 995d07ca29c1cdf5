"""The metrics core: the aggregator and the fleet view, advanced together once per tick.

Everything the NATS glue, `/metrics` and the dashboard read lives here, so all three always
agree with each other. Pure: `tick` takes the monotonic `now` and the wall-clock `at`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from services.metrics.aggregate import Aggregator
from services.metrics.fleet import FleetView
from services.metrics.rejections import Rejections
from shared.contract.forecast import ForecastMade
from shared.contract.load import FleetLoaded

MAX_HISTORY_POINTS = 20_000
"""History kept for the dashboard whatever the settings say (about 5.5 h at one point a second)."""


@dataclass
class Expired:
    """What one tick forgot, for the log."""

    balancers: list[str] = field(default_factory=list)
    vms: list[str] = field(default_factory=list)


class MetricsState:
    """Aggregated load, fleet shape, the latest snapshot, bounded history and rejected-input counts."""

    def __init__(self, window_s: float, history_s: float, interval_s: float, source: str | None = None) -> None:
        points = min(MAX_HISTORY_POINTS, max(1, round(history_s / interval_s)))
        self.aggregator = Aggregator(window_s, forget_after_s=history_s)
        self.fleet = FleetView(points, forget_after_s=history_s)
        self.latest: FleetLoaded | None = None
        self.rejections = Rejections(forget_after_s=history_s)
        self.source = source
        self.forecast: ForecastMade | None = None
        """The scaler leader's latest `fleet.scaler.forecast` (exposed by `exposition.forecast_families`)."""

    def tick(self, now: float, at: datetime) -> tuple[FleetLoaded, Expired]:
        """Drop what went stale, take a snapshot and record it in the history."""
        expired = Expired(self.aggregator.expire(now), self.fleet.expire(now))
        snapshot = self.aggregator.snapshot(now, at, self.source)
        self.fleet.record(snapshot)
        self.latest = snapshot
        return snapshot, expired
