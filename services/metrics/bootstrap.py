"""Composition root of the metrics: real adapters by default, fakes when a test passes them."""

from __future__ import annotations

from services.metrics.service import MetricsService
from services.metrics.settings import MetricsSettings
from shared.bus import Bus


def bootstrap(settings: MetricsSettings, bus: Bus | None = None) -> MetricsService:
    """Build the metrics service; nothing connects until it is entered."""
    return MetricsService(settings, bus=bus)
