"""The scaler's event side: what every replica, leader or not, folds in from the bus.

VM state changes, load snapshots, balancer reports, drain outcomes and other replicas' desired
states are heard by every replica alike, so a new leader starts from a view it already holds.
They live apart from `service.py`, which keeps the lease, the loops and the public commands:
these handlers only fold news into the service's view (through its lock) and wake its control
loop; they never decide or act. The service hands itself in as an `EventHost`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Protocol

import structlog
from nats.aio.msg import Msg

from services.scaler.core.autoscale import witness
from services.scaler.core.model import FleetState, LoadView, without_pool
from services.scaler.core.predict import learn
from services.scaler.core.track import LoadSource, follow, load_view, news_at, on_drained, on_report, on_vm_event
from services.scaler.rollout import RolloutRunner
from services.scaler.store import DesiredStore
from shared.bus import Bus
from shared.contract.draining import BackendDrained
from shared.contract.events import VmStateChanged
from shared.contract.load import BalancerReported, FleetLoaded
from shared.contract.status import DesiredState

log = structlog.get_logger("services.scaler")

Reducer = Callable[[FleetState], FleetState]


class EventHost(Protocol):
    """What the handlers read and set on the service (`store` raises RuntimeError before it started)."""

    fleet: FleetState
    load: LoadView | None
    snapshot: FleetLoaded | None
    clock: Callable[[], float]

    @property
    def leading(self) -> bool: ...

    @property
    def store(self) -> DesiredStore: ...

    @property
    def rollout(self) -> RolloutRunner: ...


class FleetEvents:
    """Subscribes the fleet's events and folds each into the host's view, then wakes the control loop.

    `mutate` applies a reducer under the host's lock (the leader's evaluation holds the same lock);
    `wake` asks the control loop for an evaluation now rather than at the next interval.
    """

    def __init__(self, host: EventHost, mutate: Callable[[Reducer], Awaitable[None]], wake: Callable[[], None]) -> None:
        self.host, self.mutate, self.wake = host, mutate, wake
        self.source = LoadSource()
        """The metrics replica whose snapshots are followed (another is taken when it falls silent)."""

    async def subscribe(self, bus: Bus) -> None:
        s = bus.subjects
        await bus.subscribe(s.vm_all, VmStateChanged, self.on_vm)
        await bus.subscribe(s.load, FleetLoaded, self.on_load)
        await bus.subscribe(s.balancer_report, BalancerReported, self.on_report)
        await bus.subscribe(s.balancer_drained, BackendDrained, self.on_drained)
        await bus.subscribe(s.scaler_state, DesiredState, self.on_state)

    async def on_vm(self, event: VmStateChanged, _msg: Msg) -> None:
        host = self.host
        host.rollout.vm_seen(event)
        await self.mutate(lambda f: on_vm_event(f, event, host.clock()))
        log.info("scaler.vm_event", vm=event.vm, state=event.state.value, host=event.host)
        self.wake()

    async def on_load(self, snapshot: FleetLoaded, _msg: Msg) -> None:
        host = self.host
        now = host.clock()
        followed = follow(self.source, snapshot.source, now, host.fleet.policy.stale_after_s / 2)
        if followed is None:
            return
        if followed.name != self.source.name:
            log.info("scaler.load_source", source=followed.name, previous=self.source.name)
        self.source = followed
        at = news_at(snapshot, host.snapshot, host.load.at if host.load else now, now)
        view = load_view(snapshot, at)
        host.snapshot, host.load = snapshot, view
        if host.leading:
            host.rollout.on_load(snapshot, now)
        if not host.leading:
            stored, known = host.store.current, host.store.revision > 0
            await self.mutate(lambda f: _witness(with_desired(f, stored, known), view, now))
        log.debug("scaler.load", rps=snapshot.rps, outstanding=snapshot.outstanding)
        self.wake()

    async def on_report(self, report: BalancerReported, _msg: Msg) -> None:
        await self.mutate(lambda f: on_report(f, report, self.host.clock()))
        log.debug("scaler.balancer_report", balancer=report.balancer)

    async def on_drained(self, event: BackendDrained, _msg: Msg) -> None:
        await self.mutate(lambda f: on_drained(f, event))
        log.info("scaler.backend_drained", vm=event.vm, balancer=event.balancer, timed_out=event.timed_out)
        self.wake()

    async def on_state(self, state: DesiredState, _msg: Msg) -> None:
        """Another replica's change is read once, by the control loop it wakes; our own echo is not news."""
        store = self.host.store
        store.heard(state)
        log.debug("scaler.state_seen", desired=state.desired, news=store.stale)
        self.wake()


def _witness(fleet: FleetState, load: LoadView, now: float) -> FleetState:
    """A follower's demand history, measured on the serving fleet alone (as the leader's `decide` does), and its
    minute history (`predict.learn`), so a new leader forecasts from the minutes it saw as a follower."""
    return replace(learn(fleet, load, now), memory=witness(without_pool(fleet), load, now).memory)


def with_desired(fleet: FleetState, stored: DesiredState, known: bool) -> FleetState:
    """The KV desired state (which any replica may have changed) copied into the fleet view."""
    hold = stored.hold_until.timestamp() if stored.hold_until else None
    return replace(
        fleet, desired=stored.desired, policy=stored.policy, hold_until=hold,
        drain_requests=frozenset(stored.draining), desired_known=known,
    )
