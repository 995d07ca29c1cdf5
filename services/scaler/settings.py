"""Settings of the scaler service (QUICFLEET_* environment variables)."""

from __future__ import annotations

import uuid

from pydantic import Field, model_validator

from shared.settings import ServiceSettings


class ScalerSettings(ServiceSettings):
    """The scaler's settings on top of the shared NATS and logging ones."""

    scaler_bucket: str = Field(
        "quicfleet_scaler", pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="JetStream KV bucket holding the desired state and the leader lease.",
    )
    scaler_id: str = Field(
        "", pattern=r"^$|^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        description="This replica's name in the lease; default: the instance name plus a random suffix.",
    )
    lease_ttl_s: float = Field(
        6.0, ge=0.5, le=300, description="A leader silent this long loses the lease to another replica."
    )
    scaler_resync_s: float = Field(
        15.0, gt=0, le=3600, description="How often every provisioner is asked for its VM list."
    )
    scaler_request_timeout_s: float = Field(
        30.0, gt=0, le=600, description="How long a create, drain or destroy request may wait for its reply."
    )
    scaler_metrics_port: int | None = Field(
        None, ge=0, le=65535, description="TCP port of the scaler's Prometheus /metrics (leader, epoch; unset: off)."
    )
    scaler_metrics_host: str = Field("127.0.0.1", description="Address of the scaler's /metrics (loopback by default).")

    @model_validator(mode="after")
    def _default_id(self) -> ScalerSettings:
        if not self.scaler_id:
            object.__setattr__(self, "scaler_id", f"{self.instance[:40]}-{uuid.uuid4().hex[:6]}")
        return self
