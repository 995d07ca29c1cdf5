"""Settings of the metrics service (QUICFLEET_* environment variables)."""

from shared.settings import ServiceSettings


class MetricsSettings(ServiceSettings):
    """The metrics's settings on top of the shared NATS and logging ones."""
