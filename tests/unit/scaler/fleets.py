"""Builders of scaler states and load snapshots for the unit tests."""

from __future__ import annotations

from dataclasses import replace

from services.scaler.core.model import FleetState, LoadView, VmLoadView, VmView
from shared.contract.events import VmState
from shared.contract.policy import ScalingPolicy

NOW = 10_000.0


def vm(name: str, state: VmState = VmState.READY, created: float = 0.0, ready_at: float | None = 0.0) -> VmView:
    """A VM on host `h1`; ready ones became ready at `ready_at`."""
    return VmView(
        name=name, state=state, since=created, created=created,
        ready_at=ready_at if state is VmState.READY else None, host="h1", address="127.0.0.1:4433",
    )


def fleet(ready: int, policy: ScalingPolicy | None = None, desired: int | None = None, **more: object) -> FleetState:
    """`ready` warm VMs named vm0.. (vm0 the oldest), desired = ready unless given."""
    vms = {f"vm{i}": vm(f"vm{i}", created=float(i)) for i in range(ready)}
    state = FleetState(desired=ready if desired is None else desired, policy=policy or ScalingPolicy(), vms=vms)
    return replace(state, **more)  # type: ignore[arg-type]


def load(state: FleetState, per_vm: float, at: float = NOW, signal: str = "outstanding") -> LoadView:
    """Every ready VM carrying `per_vm` of the signal (outstanding, rps or p95 seconds)."""
    names = [v.name for v in state.vms.values() if v.state is VmState.READY]
    if signal == "rps":
        views = {n: VmLoadView(rps=per_vm) for n in names}
    elif signal == "p95":
        views = {n: VmLoadView(rps=10, p95_s=per_vm) for n in names}
    else:
        views = {n: VmLoadView(outstanding=per_vm) for n in names}
    return LoadView(at=at, rps=sum(v.rps for v in views.values()),
                    outstanding=sum(v.outstanding for v in views.values()), vms=views)
