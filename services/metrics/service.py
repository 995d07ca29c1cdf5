"""The metrics service (skeleton: registers on NATS and drains on SIGTERM)."""

from __future__ import annotations

from services.metrics.settings import MetricsSettings
from shared.bus import Bus
from shared.runtime import BusService


class MetricsService(BusService):
    """quicfleet's metrics."""

    name = "metrics"
    description = "quicfleet metrics"

    def __init__(self, settings: MetricsSettings, bus: Bus | None = None) -> None:
        super().__init__(settings, bus)
        self.settings: MetricsSettings = settings
