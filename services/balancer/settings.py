"""Settings of the balancer service (QUICFLEET_* environment variables)."""

from shared.settings import ServiceSettings


class BalancerSettings(ServiceSettings):
    """The balancer's settings on top of the shared NATS and logging ones."""
