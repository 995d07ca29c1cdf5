"""The autoscaling policy: what the scaler aims for and how fast it may move."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Self

from pydantic import Field, create_model, model_validator
from pydantic.fields import FieldInfo

from shared.contract.base import Model

MAX_FLEET = 1000
"""No policy may ask for more VMs than this, whatever the caller sends."""

Seconds = Annotated[float, Field(ge=0, le=86_400, allow_inf_nan=False)]
Replicas = Annotated[int, Field(ge=0, le=MAX_FLEET, strict=True)]
Percent = Annotated[float, Field(ge=0, le=1000, allow_inf_nan=False)]


class Signal(StrEnum):
    """The load signal that target tracking follows."""

    OUTSTANDING = "outstanding"
    RPS = "rps"
    P95_LATENCY = "p95_latency"
    FLOWS = "flows"
    """Open flows (connections) per VM, reported by balancers in `l4` mode (they see no requests)."""


TARGET_RANGES: dict[Signal, tuple[float, float, str]] = {
    Signal.OUTSTANDING: (0.1, 100_000, "requests in flight per VM"),
    Signal.RPS: (0.1, 10_000_000, "requests per second per VM"),
    Signal.P95_LATENCY: (0.001, 60, "seconds of p95 latency"),
    Signal.FLOWS: (0.1, 10_000_000, "open flows (connections) per VM"),
}
"""Sane targets per signal: the schema's bound (> 0) let `target=1e-308` drive any load to max_replicas."""


class ForecastMode(StrEnum):
    """What the scaler does with its forecast of the load (see docs/services/scaler.md, Forecast)."""

    OFF = "off"
    WATCH = "watch"
    ON = "on"


class ScalingPolicy(Model):
    """A complete policy; `fleet.cmd.policy` replies with one."""

    min_replicas: Replicas = 1
    max_replicas: Replicas = 10
    signal: Signal = Signal.OUTSTANDING
    target: Annotated[float, Field(gt=0, le=1e9, allow_inf_nan=False)] = 8.0
    tolerance: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] = 0.1
    scale_down_tolerance: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] = 0.3
    scale_up_stabilization_s: Seconds = 0
    scale_down_stabilization_s: Seconds = 300
    scale_down_settle_s: Seconds = 10
    scale_down_after_up_s: Seconds = 300
    scale_up_lookahead_s: Seconds = 10
    scale_up_headroom: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] = 0.0
    scale_up_max_step: Annotated[int, Field(ge=1, le=MAX_FLEET, strict=True)] = 4
    scale_up_max_percent: Percent = 400
    scale_up_period_s: Seconds = 15
    scale_down_max_step: Annotated[int, Field(ge=1, le=MAX_FLEET, strict=True)] = 1
    scale_down_max_percent: Percent = 100
    scale_down_period_s: Seconds = 15
    cooldown_s: Seconds = 0
    warmup_s: Seconds = 10
    manual_hold_s: Seconds = 300
    stale_after_s: Annotated[float, Field(gt=0, le=3600, allow_inf_nan=False)] = 5
    drain_timeout_s: Annotated[float, Field(gt=0, le=3600, allow_inf_nan=False)] = 30
    evaluation_interval_s: Annotated[float, Field(ge=0.05, le=300, allow_inf_nan=False)] = 1
    failure_backoff_s: Seconds = 5
    failure_backoff_max_s: Seconds = 300
    unhealthy_replace_after_s: Annotated[float, Field(
        ge=0, le=86400, allow_inf_nan=False,
        description="Replace a VM the balancers agree is unhealthy for this long (0: never).")] = 30
    unhealthy_quorum: Annotated[float, Field(
        gt=0, le=1, allow_inf_nan=False,
        description="Share of the live balancers that know a VM which must call it unhealthy.")] = 1.0
    unhealthy_hold_share: Annotated[float, Field(
        gt=0, le=1, allow_inf_nan=False,
        description="Above this share of ready VMs unhealthy at once, replace none (a fleet-wide fault).")] = 0.5
    unhealthy_replace_interval_s: Annotated[float, Field(
        ge=0, le=86400, allow_inf_nan=False, description="At most one replacement per this many seconds.")] = 30
    host_lost_after_s: Annotated[float, Field(
        ge=0, le=86400, allow_inf_nan=False,
        description="Write off a host whose provisioner answers no list this long while another does (0: never).")] = 60

    pool_size: Annotated[int, Field(
        ge=0, le=100, strict=True,
        description="Warm pool per host: VMs booted, checked once, then paused, so a scale-out resumes one "
                    "instead of booting (0: no pool; a scale to 0 keeps the pool, setting this to 0 removes it).")] = 0
    pool_share: Annotated[float, Field(
        ge=0, le=1, allow_inf_nan=False,
        description="Warm pool as a share of the desired fleet, spread over the live hosts: each keeps "
                    "ceil(share x desired / hosts) pooled VMs when that is more than pool_size, and sheds the "
                    "share's surplus only past twice that, so a fleet wobbling around a size boots no pool VMs "
                    "(0: pool_size alone).")] = 0
    pool_max_age_s: Annotated[float, Field(
        ge=60, le=86400, allow_inf_nan=False,
        description="A pooled VM paused longer than this is recycled: the guest renews its DHCP lease at half "
                    "the lease in its own time, which stands still while paused, so keep this under half the "
                    "lease (libvirt's default: 1 h).")] = 1200
    boot_lead_percentile: Annotated[float, Field(
        ge=0, le=1, allow_inf_nan=False,
        description="Project load forward by this percentile of the measured create-to-ready (or "
                    "resume-to-ready) times, so VMs are ready when a rise arrives (0: no lead).")] = 0.9
    max_actions_per_hour: Annotated[int, Field(
        ge=0, le=100_000, strict=True,
        description="Churn budget: scale actions per rolling hour before the scaler widens its bands and then "
                    "holds (0: no budget).")] = 60
    max_flaps_per_hour: Annotated[int, Field(
        ge=0, le=100_000, strict=True,
        description="Churn budget: reversals (a scale the other way inside the flap window) per rolling hour "
                    "(0: no budget).")] = 6

    flap_guard_tolerance: Annotated[float, Field(
        ge=0, le=1, allow_inf_nan=False,
        description="Flap guard: within the flap window after a scale-in, a scale-out fires only once the load "
                    "is this far over target, not `tolerance` (0: no guard); a burst above it still scales out "
                    "at once.")] = 0.2
    forecast_mode: Annotated[ForecastMode, Field(
        description="Predictive scaling from the fleet's own load history: `watch` forecasts and publishes "
                    "what it would do and changes nothing, `on` scales out ahead of a forecast rise (never in) "
                    "and sizes the warm pool from it, `off` only keeps the history.")] = ForecastMode.WATCH
    forecast_quantile: Annotated[float, Field(
        ge=0.5, le=0.99, allow_inf_nan=False,
        description="The forecast is sized for this quantile of its own recent errors above its point forecast.")
    ] = 0.9
    forecast_max_error: Annotated[float, Field(
        gt=0, le=10, allow_inf_nan=False,
        description="A forecast whose error over the last day (mean absolute error / mean load) is above this "
                    "switches itself off until it is back under 0.8 of it.")] = 0.25
    pool_max: Annotated[int, Field(
        ge=0, le=100, strict=True,
        description="With the forecast on, the warm pool per host grows to the forecast's rise over the next "
                    "refill, up to this many (0: the forecast does not size the pool).")] = 0

    @model_validator(mode="after")
    def _bounds_ordered(self) -> Self:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) is above max_replicas ({self.max_replicas})")
        low, high, unit = TARGET_RANGES[self.signal]
        if not low <= self.target <= high:
            raise ValueError(f"target {self.target:g} is outside {low:g}..{high:g} {unit} (signal {self.signal.value})")
        return self


class PolicyPatchBase(Model):
    """Behaviour of `PolicyPatch`, whose fields are derived from `ScalingPolicy`."""

    if TYPE_CHECKING:
        # the fields are made at run time from ScalingPolicy's; tell type checkers they are keywords
        def __init__(self, **fields: Any) -> None: ...

    def apply(self, policy: ScalingPolicy) -> ScalingPolicy:
        """Return `policy` with this patch's fields set; raises ValueError when the result is inconsistent."""
        merged = policy.model_dump() | self.model_dump(exclude_none=True)
        return ScalingPolicy.model_validate(merged)


def _optional(field: FieldInfo) -> Any:
    """The field's type with its constraints kept, made optional with a None default."""
    kind: Any = Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
    return (kind | None, None)


PolicyPatch: type[PolicyPatchBase] = create_model(
    "PolicyPatch",
    __base__=PolicyPatchBase,
    __doc__="`fleet.cmd.policy`: the policy fields to change; omitted fields keep their value.",
    **{name: _optional(field) for name, field in ScalingPolicy.model_fields.items()},
)
