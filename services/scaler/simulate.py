"""A fleet model for replaying request-rate traces through a controller, one second at a time.

Used by the replay unit test and `bench/scaler_replay.py`: VMs take `boot_s` to become ready,
each ready VM serves up to `capacity_rps`, and the load is spread evenly over ready VMs.
Controllers see the fleet and the load and return the size they want; the model counts scale
actions, flaps (a reversal within `flap_window_s`), seconds and requests above capacity, and
VM-hours (booting VMs cost as much as serving ones).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from services.scaler.decide import decide
from services.scaler.model import CreateCommand, DestroyCommand, FleetState, LoadView, VmLoadView, VmView
from shared.contract.events import VmState
from shared.contract.policy import ScalingPolicy


@dataclass(frozen=True)
class FleetModel:
    """How the simulated fleet behaves."""

    capacity_rps: float = 100.0
    boot_s: float = 15.0
    flap_window_s: float = 300.0
    metrics_window_s: int = 10
    """Controllers see the mean rate over this many seconds (what a metrics pipeline reports)."""


@dataclass
class SimVm:
    name: str
    created: float
    ready_at: float


@dataclass
class Tally:
    """What a replay measured."""

    actions: int = 0
    flaps: int = 0
    seconds_over: int = 0
    requests_over: float = 0.0
    vm_seconds: float = 0.0
    sizes: list[int] = field(default_factory=list)
    changes: list[tuple[float, int]] = field(default_factory=list)

    @property
    def vm_hours(self) -> float:
        return self.vm_seconds / 3600

    def record_change(self, now: float, delta: int, window: float) -> None:
        """Count an action, and a flap when it reverses the previous one within `window`."""
        if self.changes and (self.changes[-1][1] > 0) != (delta > 0) and now - self.changes[-1][0] < window:
            self.flaps += 1
        self.actions += 1
        self.changes.append((now, delta))


class Controller(Protocol):
    """Something that sizes the fleet: ours (`decide`) or a model of another autoscaler."""

    def step(self, now: float, vms: list[SimVm], rps: float, model: FleetModel) -> list[str] | int:
        """Return VM names to remove, or the size wanted (the model adds or removes newest)."""
        ...


class DecideController:
    """`decide()` driving the model: its create commands add VMs, its destroys remove them."""

    def __init__(self, policy: ScalingPolicy, start: int) -> None:
        self.state = FleetState(desired=start, policy=policy)

    def step(self, now: float, vms: list[SimVm], rps: float, model: FleetModel) -> list[str] | int:
        views = {vm.name: _view(vm, now) for vm in vms}
        self.state = replace(self.state, vms=views, pending={}, drains={k: v for k, v in self.state.drains.items()
                                                                        if k in views})
        decision = decide(self.state, _load(vms, rps, now, model.metrics_window_s), now)
        self.state = decision.state
        creates = sum(isinstance(c, CreateCommand) for c in decision.commands)
        gone = [c.vm for c in decision.commands if isinstance(c, DestroyCommand)]
        return gone if gone else len(vms) + creates


def _view(vm: SimVm, now: float) -> VmView:
    ready = now >= vm.ready_at
    return VmView(
        name=vm.name, state=VmState.READY if ready else VmState.BOOTING, since=vm.created, created=vm.created,
        ready_at=vm.ready_at if ready else None, host="sim",
    )


def _load(vms: list[SimVm], rps: float, now: float, window_s: float) -> LoadView:
    ready = [vm for vm in vms if now >= vm.ready_at]
    per = rps / len(ready) if ready else 0.0
    return LoadView(at=now, rps=rps, vms={vm.name: VmLoadView(rps=per) for vm in ready}, window_s=window_s)


def replay(trace: Sequence[float], controller: Controller, model: FleetModel, start: int) -> Tally:
    """Run the trace (requests/s, one entry per second) and measure the controller."""
    tally, vms, serial = Tally(), [SimVm(f"vm{i}", -model.boot_s, 0.0) for i in range(start)], start
    window = max(1, model.metrics_window_s)
    for second, rps in enumerate(trace):
        now = float(second)
        seen = trace[max(0, second - window + 1): second + 1]
        answer = controller.step(now, vms, sum(seen) / len(seen), model)
        before = len(vms)
        if isinstance(answer, list):
            vms = [vm for vm in vms if vm.name not in answer]
        else:
            vms = vms[: max(answer, 0)] if answer < len(vms) else vms
            for _ in range(answer - len(vms)):
                vms.append(SimVm(f"vm{serial}", now, now + model.boot_s))
                serial += 1
        if len(vms) != before:
            tally.record_change(now, len(vms) - before, model.flap_window_s)
        _measure(tally, vms, rps, now, model)
    return tally


def _measure(tally: Tally, vms: list[SimVm], rps: float, now: float, model: FleetModel) -> None:
    capacity = sum(1 for vm in vms if now >= vm.ready_at) * model.capacity_rps
    if rps > capacity:
        tally.seconds_over += 1
        tally.requests_over += rps - capacity
    tally.vm_seconds += len(vms)
    tally.sizes.append(len(vms))
