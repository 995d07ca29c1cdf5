"""Settings of the scaler service (QUICFLEET_* environment variables)."""

from shared.settings import ServiceSettings


class ScalerSettings(ServiceSettings):
    """The scaler's settings on top of the shared NATS and logging ones."""
