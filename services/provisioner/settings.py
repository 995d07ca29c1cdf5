"""Settings of the provisioner service (QUICFLEET_* environment variables).

Every service shares the `QUICFLEET_` prefix, so names that could mean something elsewhere
carry a provisioner-specific word (`vm_`, `ready_`, `provisioner_`).
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from shared.contract.subjects import HOST_TOKEN
from shared.settings import ServiceSettings

_PREFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,30}$")
_FLEET_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _default_host() -> str:
    """This machine's short name, made into a valid subject token."""
    name = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname().split(".")[0])[:64]
    return name or "local"


class ProvisionerSettings(ServiceSettings):
    """The provisioner's settings on top of the shared NATS and logging ones."""

    libvirt_uri: str = Field("qemu:///system", min_length=1, description="libvirt connection URI.")
    template: str = Field("backend-template", min_length=1, max_length=200, description="Template domain name.")
    vm_prefix: str = Field("qf-", description="Name prefix of the VMs this provisioner makes.")
    fleet_id: str = Field("quicfleet", description="Tag written into each VM; only tagged VMs are ever touched.")
    host: str = Field(default_factory=_default_host, description="This hypervisor's name (a subject token).")
    clone_mode: Literal["linked", "full"] = Field("linked", description="qcow2 overlay or full disk copy.")
    address_strategy: Literal["lease", "agent", "static"] = Field("lease", description="How a VM's IP is found.")
    static_addresses: str = Field("", max_length=10_000, description="Comma-separated ip or ip:port pool (static).")
    network: str = Field("default", min_length=1, description="libvirt network whose leases give addresses.")
    backend_port: int = Field(443, ge=1, le=65535, description="Port of the backend's HTTP/3 server.")
    ready_path: str = Field("/", pattern=r"^/[\x21-\x7e]*$", max_length=512, description="Readiness GET path.")
    ready_verify_tls: bool = Field(False, description="Verify the backend certificate (off: self-signed template).")
    ready_ca_file: Path | None = Field(None, description="CA bundle for verifying backends (implies verify).")
    ready_identity: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Check that a VM answers with its own UUID (x-quicfleet-vm); auto: when the template declares it.",
    )
    ready_timeout_s: float = Field(3.0, gt=0, le=60, description="One readiness request's timeout.")
    boot_timeout_s: float = Field(120.0, gt=0, le=3600, description="Clone to ready deadline, else failed.")
    provisioner_max_in_flight: int = Field(2, ge=1, le=64, description="Clones/boots running at once.")
    max_vms: int = Field(10, ge=0, le=1000, description="Hard ceiling on VMs this host runs.")
    reconcile_interval_s: float = Field(30.0, ge=0.05, le=3600, description="Seconds between reconciles.")
    provisioner_metrics_port: int | None = Field(
        None, ge=0, le=65535,
        description="TCP port of the provisioner's Prometheus /metrics (boot times, libvirt errors; unset: off).",
    )
    provisioner_metrics_host: str = Field(
        "127.0.0.1", description="Address of the provisioner's /metrics: loopback unless told otherwise."
    )

    @field_validator("host")
    @classmethod
    def _host_token(cls, value: str) -> str:
        if not HOST_TOKEN.match(value):
            raise ValueError("must be 1-64 letters, digits, '_' or '-' (it is a NATS subject token)")
        return value

    @field_validator("vm_prefix")
    @classmethod
    def _prefix_ok(cls, value: str) -> str:
        if not _PREFIX.match(value):
            raise ValueError("must start with a letter or digit and hold at most 31 of [A-Za-z0-9_-]")
        return value

    @field_validator("fleet_id")
    @classmethod
    def _fleet_ok(cls, value: str) -> str:
        if not _FLEET_ID.match(value):
            raise ValueError("must be 1-64 of [A-Za-z0-9._-], starting with a letter or digit")
        return value

    @field_validator("static_addresses")
    @classmethod
    def _addresses_ok(cls, value: str) -> str:
        from services.provisioner.core.addresses import parse_static_pool

        parse_static_pool(value, 443)
        return value
