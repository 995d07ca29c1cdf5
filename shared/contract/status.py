"""The fleet's desired state (kept by the scaler) and the `fleet.cmd.status` answer."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field

from shared.contract.base import Address, Message, Model, Name, utcnow
from shared.contract.events import VmState
from shared.contract.load import FleetLoaded
from shared.contract.policy import MAX_FLEET, ScalingPolicy
from shared.contract.provisioning import Epoch
from shared.contract.rollout import RolloutState


class DesiredState(Message):
    """`fleet.scaler.state` and the KV record: what the fleet should look like."""

    desired: Annotated[int, Field(ge=0, le=MAX_FLEET)] = 0
    policy: ScalingPolicy = Field(default_factory=ScalingPolicy)
    hold_until: datetime | None = Field(default=None, description="Autoscaling paused until (manual scale).")
    epoch: Epoch = 0
    leader: Name | None = None
    updated_at: datetime = Field(default_factory=utcnow)
    draining: Annotated[list[Name], Field(max_length=MAX_FLEET)] = Field(
        default=[], description="VMs a `fleet.cmd.drain` asked to remove, until they are destroyed."
    )


class VmStatus(Model):
    """One VM in a status reply."""

    name: Name
    state: VmState
    address: Address | None = None
    since: datetime
    outstanding: Annotated[float, Field(ge=0)] | None = None
    host: Name | None = None
    pool: bool = Field(default=False, description="The warm pool's: pooled, or booting for the pool; not serving.")


class PoolStatus(Model):
    """One host's warm pool in a status reply (the policy's `pool_size` is what it is kept at)."""

    host: Name
    pooled: Annotated[int, Field(ge=0, le=MAX_FLEET)] = Field(description="Paused VMs ready to resume.")
    coming: Annotated[int, Field(ge=0, le=MAX_FLEET)] = Field(
        default=0, description="VMs booting for the pool, or asked for and not answered yet."
    )


class BalancerStatus(Model):
    """One live balancer in a status reply."""

    id: Name
    address: Address | None = None
    last_seen: datetime


class FleetStatus(Model):
    """Result of `fleet.cmd.status`."""

    desired: Annotated[int, Field(ge=0, le=MAX_FLEET)]
    policy: ScalingPolicy
    hold_until: datetime | None = None
    leader: Name | None = None
    epoch: Epoch = 0
    vms: list[VmStatus] = []
    balancers: list[BalancerStatus] = []
    load: FleetLoaded | None = None
    reason: Annotated[str, Field(max_length=1000)] | None = None
    """The leader's latest evaluation in words (why it holds or moves); a follower relays it from the lease."""
    pools: Annotated[list[PoolStatus], Field(max_length=MAX_FLEET)] = []
    """Each host's warm pool, hosts with none left out (sum `pooled` for the total)."""
    rollout: RolloutState | None = None
    """The template rollout as stored (its phase and reason; None: none was ever started)."""
