"""Composition root of the provisioner: real adapters by default, fakes when a test passes them."""

from __future__ import annotations

from services.provisioner.service import ProvisionerService
from services.provisioner.settings import ProvisionerSettings
from shared.bus import Bus


def bootstrap(settings: ProvisionerSettings, bus: Bus | None = None) -> ProvisionerService:
    """Build the provisioner service; nothing connects until it is entered."""
    return ProvisionerService(settings, bus=bus)
