"""The provisioner service (skeleton: registers on NATS and drains on SIGTERM)."""

from __future__ import annotations

from services.provisioner.settings import ProvisionerSettings
from shared.bus import Bus
from shared.runtime import BusService


class ProvisionerService(BusService):
    """quicfleet's provisioner."""

    name = "provisioner"
    description = "quicfleet provisioner"

    def __init__(self, settings: ProvisionerSettings, bus: Bus | None = None) -> None:
        super().__init__(settings, bus)
        self.settings: ProvisionerSettings = settings
