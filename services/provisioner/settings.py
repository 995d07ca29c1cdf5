"""Settings of the provisioner service (QUICFLEET_* environment variables)."""

from shared.settings import ServiceSettings


class ProvisionerSettings(ServiceSettings):
    """The provisioner's settings on top of the shared NATS and logging ones."""
