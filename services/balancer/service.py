"""The balancer service (skeleton: registers on NATS and drains on SIGTERM)."""

from __future__ import annotations

from services.balancer.settings import BalancerSettings
from shared.bus import Bus
from shared.runtime import BusService


class BalancerService(BusService):
    """quicfleet's balancer."""

    name = "balancer"
    description = "quicfleet balancer"

    def __init__(self, settings: BalancerSettings, bus: Bus | None = None) -> None:
        super().__init__(settings, bus)
        self.settings: BalancerSettings = settings
