"""Public commands: imperative requests on `fleet.cmd.*`, answered with the reply envelope."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from shared.contract.base import Message, Name
from shared.contract.policy import MAX_FLEET, PolicyPatch

__all__ = ["DrainVm", "GetStatus", "PolicyPatch", "ScaleFleet"]


class ScaleFleet(Message):
    """`fleet.cmd.scale`: set the desired fleet size (within the policy's bounds)."""

    replicas: Annotated[int, Field(ge=0, le=MAX_FLEET, strict=True)]


class GetStatus(Message):
    """`fleet.cmd.status`: ask for desired size, policy, VMs, balancers and the latest load."""


class DrainVm(Message):
    """`fleet.cmd.drain`: stop routing to a VM, let its requests finish, then remove it."""

    vm: Name
