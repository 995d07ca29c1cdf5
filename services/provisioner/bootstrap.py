"""Composition root of the provisioner: real adapters by default, fakes when a test passes them."""

from __future__ import annotations

from services.provisioner.boot import Probe
from services.provisioner.core.ports import Hypervisor
from services.provisioner.libvirt_adapter import LibvirtHypervisor
from services.provisioner.readiness import ReadinessProbe
from services.provisioner.service import ProvisionerService
from services.provisioner.settings import ProvisionerSettings
from shared.bus import Bus


def bootstrap(
    settings: ProvisionerSettings, bus: Bus | None = None, hv: Hypervisor | None = None, probe: Probe | None = None
) -> ProvisionerService:
    """Build the provisioner service; nothing connects until it is entered."""
    hypervisor = hv or LibvirtHypervisor(settings.libvirt_uri, settings.network)
    readiness = probe or ReadinessProbe(
        path=settings.ready_path, verify_tls=settings.ready_verify_tls, ca_file=settings.ready_ca_file,
        timeout_s=settings.ready_timeout_s,
    )
    return ProvisionerService(settings, hypervisor, readiness, bus=bus)
