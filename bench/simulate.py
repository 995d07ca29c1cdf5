"""A fleet model for replaying request-rate traces through a controller, one second at a time.

Used by the replay unit test and `bench/scaler_replay.py`: VMs take `boot_s` to become ready,
each ready VM serves up to `capacity_rps`, and the load is spread evenly over ready VMs.
Controllers see the fleet and the load and act on it (`SimFleet`); the model counts scale
actions, flaps (a reversal within `flap_window_s`), seconds and requests above capacity, and
VM-hours (booting VMs cost as much as serving ones).

The warm pool is modelled as the provisioner keeps it: a pool create boots a VM on its host
(`boot_s`) and pauses it; a plain create on a host with a paused VM resumes that one, ready
`resume_s` later, instead of booting. Pool VMs are billed apart (`Tally.pool_hours`): a paused
VM holds memory, not CPU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from services.scaler.core.boottimes import note
from services.scaler.core.decide import decide
from services.scaler.core.model import CreateCommand, DestroyCommand, FleetState, LoadView, VmLoadView, VmView
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
    resume_s: float = 3.0
    """A pooled VM that a create takes is ready this long after (resumed and checked again)."""
    hosts: int = 1
    """Hosts the VMs are spread over (each keeps its own pool of `pool_size`)."""


@dataclass
class SimVm:
    name: str
    created: float
    ready_at: float
    host: str = "h0"
    request_id: str | None = None
    taken_at: float | None = None
    """When a create took it from the pool (None: it was booted to serve)."""


@dataclass
class Tally:
    """What a replay measured."""

    actions: int = 0
    flaps: int = 0
    seconds_over: int = 0
    requests_over: float = 0.0
    vm_seconds: float = 0.0
    pool_seconds: float = 0.0
    sizes: list[int] = field(default_factory=list)
    changes: list[tuple[float, int]] = field(default_factory=list)

    @property
    def vm_hours(self) -> float:
        return self.vm_seconds / 3600

    @property
    def pool_hours(self) -> float:
        """Hours of warm pool VMs, booting for the pool or paused (billed apart from serving ones)."""
        return self.pool_seconds / 3600

    def record_change(self, now: float, delta: int, window: float) -> None:
        """Count an action, and a flap when it reverses the previous one within `window`."""
        if self.changes and (self.changes[-1][1] > 0) != (delta > 0) and now - self.changes[-1][0] < window:
            self.flaps += 1
        self.actions += 1
        self.changes.append((now, delta))


@dataclass
class SimFleet:
    """The simulated VMs: those serving (booting or ready) and the warm pool's (booting for it, or paused)."""

    model: FleetModel
    vms: list[SimVm] = field(default_factory=list)
    pool: list[SimVm] = field(default_factory=list)
    serial: int = 0

    def _new(self, now: float, host: str, request_id: str | None) -> SimVm:
        self.serial += 1
        return SimVm(f"vm{self.serial}", now, now + self.model.boot_s, host, request_id)

    def create(self, now: float, host: str | None = None, request_id: str | None = None) -> None:
        """A plain create: resume a paused VM of `host`'s pool (any host's when None), else boot one there."""
        paused = [vm for vm in self.pool if now >= vm.ready_at and host in (None, vm.host)]
        if paused:
            vm = paused[0]
            self.pool.remove(vm)
            self.vms.append(replace(vm, ready_at=now + self.model.resume_s, request_id=request_id, taken_at=now))
            return
        self.vms.append(self._new(now, host or "h0", request_id))

    def fill(self, now: float, host: str, request_id: str) -> None:
        """A pool create: boot a VM on `host` that pauses once booted."""
        self.pool.append(self._new(now, host, request_id))

    def remove(self, names: set[str]) -> None:
        """Destroy VMs, serving or pooled."""
        self.vms = [vm for vm in self.vms if vm.name not in names]
        self.pool = [vm for vm in self.pool if vm.name not in names]

    def resize(self, now: float, size: int) -> None:
        """Remove the newest serving VMs or boot new ones, to `size` (what a controller without a pool does)."""
        del self.vms[max(size, 0):]
        while len(self.vms) < size:
            self.vms.append(self._new(now, "h0", None))


class Controller(Protocol):
    """Something that sizes the fleet: ours (`decide`) or a model of another autoscaler."""

    def step(self, now: float, fleet: SimFleet, rps: float) -> None:
        """Look at the fleet and the mean load, and act on the fleet."""
        ...


class DecideController:
    """`decide()` driving the model: its creates add (or resume) VMs, its pool creates fill pools, destroys remove.

    It sees each VM's state changes as the scaler's reducers would, at the model's exact times,
    so the boot lead reads measured boot and resume times (`boottimes.note`).
    """

    def __init__(self, policy: ScalingPolicy, start: int, hosts: int = 1, hold_out_after_in_s: float = 0.0) -> None:
        self.state = FleetState(desired=start, policy=policy, hosts={f"h{i}": 1000 for i in range(hosts)})
        self.views: dict[str, VmView] = {}
        self.hold_out_after_in_s = hold_out_after_in_s
        """A what-if for the frontier bench, not a policy: a scale-out `decide` chooses this long after a scale-in
        is undone (a causal controller's only way never to flap); it decides afresh each second."""
        self.last_in = -math.inf

    def step(self, now: float, fleet: SimFleet, rps: float) -> None:
        views = self._views(fleet, now)
        self.state = replace(self.state, vms=views, pending={}, pool_pending={}, placed={},
                             drains={k: v for k, v in self.state.drains.items() if k in views})
        decision = decide(self.state, _load(fleet.vms, rps, now, fleet.model.metrics_window_s), now)
        held = decision.state.desired > self.state.desired and now - self.last_in < self.hold_out_after_in_s
        self.state = _unscaled(decision.state, self.state.desired, now) if held else decision.state
        gone = {c.vm for c in decision.commands if isinstance(c, DestroyCommand)}
        if gone & {vm.name for vm in fleet.vms}:
            self.last_in = now
        if gone:
            fleet.remove(gone)
        for command in decision.commands:
            if isinstance(command, CreateCommand) and command.pooled:
                fleet.fill(now, command.host or "h0", command.request_id)
            elif isinstance(command, CreateCommand) and not held:
                fleet.create(now, command.host, command.request_id)

    def _views(self, fleet: SimFleet, now: float) -> dict[str, VmView]:
        """The scaler's view of every VM; each state change is fed to the boot-time record, stamped with when it
        happened in the model (a view is made anew only when its VM's state changed: a day is 86,400 steps)."""
        boots, views = self.state.boots, {}
        for vm, pooled in [(vm, False) for vm in fleet.vms] + [(vm, True) for vm in fleet.pool]:
            old, state = self.views.get(vm.name), _state(vm, now, pooled)
            if old is not None and old.state is state:
                views[vm.name] = old
                continue
            was = old.state if old is not None else None
            boots = note(boots, vm.name, vm.host, was, state, _changed_at(vm, state, was))
            views[vm.name] = _view(vm, state)
        self.views = views
        self.state = replace(self.state, boots=boots)
        return views


def _unscaled(state: FleetState, desired: int, now: float) -> FleetState:
    """`state` as if its scale-out of `now` had not been decided: the old size, and no scale-up remembered."""
    actions = tuple((t, d) for t, d in state.memory.actions if t != now or d < 0)
    return replace(state, desired=desired, memory=replace(state.memory, actions=actions))


def _changed_at(vm: SimVm, state: VmState, was: VmState | None) -> float:
    """When the model's VM entered `state`: booted (ready or paused), resumed, or first created."""
    if state is not VmState.BOOTING:
        return vm.ready_at
    return vm.taken_at if was is VmState.POOLED and vm.taken_at is not None else vm.created


def _state(vm: SimVm, now: float, pooled: bool) -> VmState:
    if now >= vm.ready_at:
        return VmState.POOLED if pooled else VmState.READY
    return VmState.BOOTING


def _view(vm: SimVm, state: VmState) -> VmView:
    if state is VmState.POOLED:
        return VmView(name=vm.name, state=state, since=vm.ready_at, created=vm.created, host=vm.host,
                      request_id=vm.request_id)
    ready = state is VmState.READY
    return VmView(
        name=vm.name, state=state, since=vm.created, created=vm.created,
        ready_at=vm.ready_at if ready else None, host=vm.host, request_id=vm.request_id,
    )


def _load(vms: list[SimVm], rps: float, now: float, window_s: float) -> LoadView:
    ready = [vm for vm in vms if now >= vm.ready_at]
    per = rps / len(ready) if ready else 0.0
    return LoadView(at=now, rps=rps, vms={vm.name: VmLoadView(rps=per) for vm in ready}, window_s=window_s)


def replay(trace: Sequence[float], controller: Controller, model: FleetModel, start: int) -> Tally:
    """Run the trace (requests/s, one entry per second) and measure the controller."""
    fleet = SimFleet(model, [SimVm(f"vm{i}", -model.boot_s, 0.0, f"h{i % model.hosts}") for i in range(start)])
    fleet.serial, tally = start, Tally()
    window = max(1, model.metrics_window_s)
    for second, rps in enumerate(trace):
        now = float(second)
        seen = trace[max(0, second - window + 1): second + 1]
        before = len(fleet.vms)
        controller.step(now, fleet, sum(seen) / len(seen))
        if len(fleet.vms) != before:
            tally.record_change(now, len(fleet.vms) - before, model.flap_window_s)
        _measure(tally, fleet, rps, now)
    return tally


def _measure(tally: Tally, fleet: SimFleet, rps: float, now: float) -> None:
    capacity = sum(1 for vm in fleet.vms if now >= vm.ready_at) * fleet.model.capacity_rps
    if rps > capacity:
        tally.seconds_over += 1
        tally.requests_over += rps - capacity
    tally.vm_seconds += len(fleet.vms)
    tally.pool_seconds += len(fleet.pool)
    tally.sizes.append(len(fleet.vms))
