"""What each public command does to the desired state, and the status answer: pure functions.

The service applies an edit to the latest KV value inside a revision-checked write, so a
follower and the leader can both take commands without losing one another's changes.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pydantic import ValidationError

from services.scaler.core.autoscale import clamp
from services.scaler.core.model import FleetState
from services.scaler.core.pool import counts
from services.scaler.core.reconcile import outstanding
from shared.contract.base import ErrorCode
from shared.contract.commands import DrainVm, ScaleFleet
from shared.contract.events import LIVE_STATES
from shared.contract.load import FleetLoaded
from shared.contract.policy import PolicyPatchBase
from shared.contract.status import BalancerStatus, DesiredState, FleetStatus, PoolStatus, VmStatus
from shared.errors import BusError, describe_validation_error


def when(seconds: float) -> datetime:
    """Float seconds since the epoch as an aware UTC datetime."""
    return datetime.fromtimestamp(seconds, UTC)


def scale(state: DesiredState, cmd: ScaleFleet, now: float) -> DesiredState:
    """Set the size within the policy's bounds and hold autoscaling for `manual_hold_s`."""
    policy = state.policy
    if not policy.min_replicas <= cmd.replicas <= policy.max_replicas:
        raise BusError(
            ErrorCode.INVALID,
            f"replicas {cmd.replicas} is outside the policy's bounds [{policy.min_replicas}, {policy.max_replicas}]",
        )
    hold = when(now) + timedelta(seconds=policy.manual_hold_s)
    return state.model_copy(update={"desired": cmd.replicas, "hold_until": hold})


def set_policy(state: DesiredState, patch: PolicyPatchBase) -> DesiredState:
    """Merge the patch; an inconsistent result is `invalid`; the size is pulled into the new bounds."""
    try:
        policy = patch.apply(state.policy)
    except ValidationError as error:
        raise BusError(ErrorCode.INVALID, describe_validation_error(error)) from None
    except ValueError as error:
        raise BusError(ErrorCode.INVALID, str(error)[:500]) from None
    return state.model_copy(update={"policy": policy, "desired": clamp(state.desired, policy)})


def drain(state: DesiredState, cmd: DrainVm, fleet: FleetState, now: float) -> DesiredState:
    """Mark the VM for draining and shrink the size by one (not below min: then it is replaced).

    A VM of the warm pool serves nothing and is never drained: the pool is the policy's (`pool_size`).
    """
    vm = fleet.vms.get(cmd.vm)
    if vm is None or vm.state not in LIVE_STATES:
        raise BusError(ErrorCode.NOT_FOUND, f"no VM named {cmd.vm} in the fleet")
    if vm.in_pool:
        raise BusError(ErrorCode.INVALID, f"{cmd.vm} is in the warm pool, not serving: lower pool_size to remove it")
    if cmd.vm in state.draining:
        return state
    hold = when(now) + timedelta(seconds=state.policy.manual_hold_s)
    desired = max(state.policy.min_replicas, state.desired - 1) if state.desired else 0
    return state.model_copy(update={"desired": desired, "draining": [*state.draining, cmd.vm], "hold_until": hold})


def forget_drained(state: DesiredState, vm: str) -> DesiredState:
    """The VM is destroyed: it no longer needs to be on the drain list."""
    return state.model_copy(update={"draining": [name for name in state.draining if name != vm]})


def status(
    desired: DesiredState, fleet: FleetState, leader: str | None, epoch: int, load: FleetLoaded | None, now: float,
    reason: str | None = None,
) -> FleetStatus:
    """The `fleet.cmd.status` answer from this replica's view."""
    vms = [
        VmStatus(
            name=vm.name, state=vm.state, address=vm.address, since=when(vm.since),
            outstanding=float(outstanding(fleet, vm.name, now)), host=vm.host, pool=vm.in_pool,
        )
        for vm in sorted(fleet.vms.values(), key=lambda v: v.name)
    ]
    balancers = [
        BalancerStatus(id=b.id, address=b.address, last_seen=when(b.last_seen))
        for b in sorted(fleet.balancers.values(), key=lambda b: b.id) if b.live(now)
    ]
    return FleetStatus(
        desired=desired.desired, policy=desired.policy, hold_until=desired.hold_until, leader=leader,
        epoch=epoch, vms=vms, balancers=balancers, load=load, reason=reason,
        pools=[PoolStatus(host=host, pooled=pooled, coming=coming) for host, (pooled, coming) in counts(fleet).items()],
    )
