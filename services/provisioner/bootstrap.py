"""Composition root of the provisioner: real adapters by default, fakes when a test passes them."""

from __future__ import annotations

from services.provisioner.basevolumes import BaseVolumes
from services.provisioner.boot import Probe
from services.provisioner.core.ports import Hypervisor
from services.provisioner.libvirt_adapter import LibvirtHypervisor
from services.provisioner.readiness import ReadinessProbe
from services.provisioner.service import ProvisionerService
from services.provisioner.settings import ProvisionerSettings
from services.provisioner.telemetry import ProvisionerTelemetry, counting, make_registry
from shared.bus import Bus
from shared.metricsserver import MetricsServer


def bootstrap(
    settings: ProvisionerSettings, bus: Bus | None = None, hv: Hypervisor | None = None, probe: Probe | None = None
) -> ProvisionerService:
    """Build the provisioner service; nothing connects until it is entered. Every libvirt call goes through the
    telemetry's counter; `/metrics` is served only when `provisioner_metrics_port` is set."""
    telemetry = ProvisionerTelemetry(settings.host)
    hypervisor = counting(hv or LibvirtHypervisor(settings.libvirt_uri, settings.network), telemetry)
    readiness = probe or ReadinessProbe(
        path=settings.ready_path, verify_tls=settings.ready_verify_tls, ca_file=settings.ready_ca_file,
        timeout_s=settings.ready_timeout_s,
    )
    port, host = settings.provisioner_metrics_port, settings.provisioner_metrics_host
    server = MetricsServer(make_registry(telemetry), host, port) if port is not None else None
    store = BaseVolumes(settings.libvirt_uri)  # template base images: a libvirt connection of its own
    return ProvisionerService(
        settings, hypervisor, readiness, bus=bus, telemetry=telemetry, metrics=server, store=store
    )
