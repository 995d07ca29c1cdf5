"""Settings of the metrics service (QUICFLEET_* environment variables)."""

from pydantic import Field, model_validator

from shared.settings import ServiceSettings


class MetricsSettings(ServiceSettings):
    """The metrics service's settings on top of the shared NATS and logging ones."""

    metrics_host: str = Field(
        "127.0.0.1", min_length=1, max_length=255, description="Address the HTTP server (/metrics, dashboard) binds."
    )
    metrics_port: int = Field(9090, ge=0, le=65535, description="HTTP port; 0 picks a free one (tests).")
    metrics_reuse_port: bool = Field(
        True, description="Bind with SO_REUSEPORT: replicas on one host network share the port (any one answers)."
    )
    metrics_interval_s: float = Field(
        1.0, ge=0.05, le=60, description="How often a `fleet.load` snapshot is published."
    )
    metrics_window_s: float = Field(
        10.0, ge=1, le=3600, description="Sliding window over which rates, error rate and latency are computed."
    )
    metrics_history_s: float = Field(
        900.0, ge=10, le=86_400,
        description="Dashboard history kept in memory (bounded); also how long gone VMs are remembered.",
    )

    @model_validator(mode="after")
    def _window_covers_interval(self) -> "MetricsSettings":
        if self.metrics_window_s < self.metrics_interval_s:
            raise ValueError("metrics_window_s must be at least metrics_interval_s")
        return self
