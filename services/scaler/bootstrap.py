"""Composition root of the scaler: real adapters by default, fakes when a test passes them."""

from __future__ import annotations

import time
from collections.abc import Callable

from services.scaler.service import ScalerService
from services.scaler.settings import ScalerSettings
from shared.bus import Bus


def bootstrap(
    settings: ScalerSettings, bus: Bus | None = None, clock: Callable[[], float] = time.time
) -> ScalerService:
    """Build the scaler service; nothing connects until it is entered."""
    return ScalerService(settings, bus=bus, clock=clock)
