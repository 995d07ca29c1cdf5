"""Composition root of the balancer: real adapters by default, fakes when a test passes them."""

from __future__ import annotations

from services.balancer.service import BalancerService
from services.balancer.settings import BalancerSettings
from shared.bus import Bus


def bootstrap(settings: BalancerSettings, bus: Bus | None = None) -> BalancerService:
    """Build the balancer service; nothing connects until it is entered."""
    return BalancerService(settings, bus=bus)
