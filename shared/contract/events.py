"""Events: facts that already happened, named in the past tense, published without a reply."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import Field

from shared.contract.base import Address, Event, Name, Reason, RequestId, VmUuid, utcnow
from shared.contract.templates import VersionId


class VmState(StrEnum):
    """Where a backend VM is in its life; each state has its own `fleet.vm.<state>` subject."""

    REQUESTED = "requested"
    CLONING = "cloning"
    BOOTING = "booting"
    READY = "ready"
    POOLED = "pooled"
    """Booted, checked once and paused in the warm pool: never routed to, not serving capacity."""
    DRAINING = "draining"
    DESTROYED = "destroyed"
    FAILED = "failed"


LIVE_STATES = frozenset(
    {VmState.REQUESTED, VmState.CLONING, VmState.BOOTING, VmState.READY, VmState.DRAINING, VmState.POOLED}
)
"""States that hold (or will hold) a VM in libvirt and so count against the fleet size."""


class VmStateChanged(Event):
    """`fleet.vm.<state>`: a VM entered `state` (the subject's last token repeats it)."""

    vm: Name
    state: VmState
    address: Address | None = None
    at: datetime = Field(default_factory=utcnow)
    reason: Reason | None = None
    request_id: RequestId | None = None
    host: Name | None = Field(default=None, description="Provisioner host that owns the VM.")
    uuid: VmUuid | None = Field(default=None, description="libvirt domain UUID (the guest's SMBIOS system UUID).")
    identity: bool = Field(
        default=False, description="The VM sends `uuid` in an `x-quicfleet-vm` header on every response: check it."
    )
    paused: bool = Field(default=False, description="libvirt reports the domain paused: it serves nothing.")
    deadline_s: Annotated[float, Field(gt=0, le=3600, allow_inf_nan=False)] | None = Field(
        default=None,
        description="`draining` only: how long a balancer waits for its in-flight requests before it reports "
                    "`fleet.balancer.drained` anyway.",
    )
    version: VersionId | None = Field(
        default=None, description="The template version it was cloned from (None: the template domain itself)."
    )


class ScalingDecided(Event):
    """`fleet.scaler.decision`: the leader changed (or chose to hold) the fleet size, and why."""

    at: datetime = Field(default_factory=utcnow)
    current: Annotated[int, Field(ge=0, le=100_000)]
    desired: Annotated[int, Field(ge=0, le=100_000)]
    reason: Reason
    signal: Annotated[str, Field(max_length=32)] | None = None
    observed: Annotated[float, Field(allow_inf_nan=False)] | None = None
    target: Annotated[float, Field(allow_inf_nan=False)] | None = None
    leader: Name | None = None
    epoch: Annotated[int, Field(ge=0)] = 0
