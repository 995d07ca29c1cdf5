"""The scaler service: thin asyncio glue around the pure core (`decide`, `reconcile`, reducers).

Every replica folds events into its `FleetState`, answers the public commands and stores
their effect in KV. Only the lease holder evaluates and acts. Evaluation runs on every load
snapshot (so the reaction to a load change is one message, not one polling period) and at
least every `evaluation_interval_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import replace

import structlog
from nats.aio.msg import Msg
from nats.errors import Error as NatsError

from services.scaler.actuator import Actuator
from services.scaler.core import edits, reconcile
from services.scaler.core.autoscale import witness
from services.scaler.core.decide import decide
from services.scaler.core.history import merged
from services.scaler.core.model import AutoscaleMemory, Decision, FleetState, LoadView, without_pool
from services.scaler.core.predict import learn
from services.scaler.core.track import (
    LoadSource,
    follow,
    forget,
    load_view,
    new_term,
    news_at,
    on_capacity,
    on_create_failed,
    on_created,
    on_drained,
    on_heard,
    on_hosts,
    on_lists,
    on_report,
    on_vm_event,
)
from services.scaler.foresight import Foresight, load_history, save_history
from services.scaler.lease import Lease
from services.scaler.rollout import RolloutRunner
from services.scaler.settings import ScalerSettings
from services.scaler.store import DesiredStore
from services.scaler.telemetry import ScalerTelemetry
from shared.bus import Bus
from shared.contract.commands import DrainVm, GetStatus, PolicyPatch, ScaleFleet
from shared.contract.draining import BackendDrained
from shared.contract.events import ScalingDecided, VmStateChanged
from shared.contract.load import BalancerReported, FleetLoaded
from shared.contract.policy import PolicyPatchBase, ScalingPolicy
from shared.contract.provisioning import ListVms, VmList, VmRecord
from shared.contract.status import DesiredState, FleetStatus
from shared.endpoints import Endpoint
from shared.errors import BusError
from shared.kv import open_bucket
from shared.runtime import BusService

log = structlog.get_logger("services.scaler")

Reducer = Callable[[FleetState], FleetState]


class ScalerService(BusService):
    """quicfleet's scaler: owns the desired fleet size and the policy, and acts when it leads."""

    name = "scaler"
    description = "quicfleet scaler: desired fleet size, policy and public commands"

    def __init__(
        self, settings: ScalerSettings, bus: Bus | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(settings, bus)
        self.settings: ScalerSettings = settings
        self.clock = clock
        self.telemetry = ScalerTelemetry(settings, self, lambda: self._rollout.state if self._rollout else None)
        self.fleet = FleetState(desired=0, policy=ScalingPolicy(), leader=settings.scaler_id)
        self.load: LoadView | None = None
        self.snapshot: FleetLoaded | None = None
        self._source = LoadSource()
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._stopping = False
        self._term = 0
        self._missed = False
        self._obeyed = 0
        """The newest leader epoch a provisioner says it obeys: a new term starts above it."""
        self._store: DesiredStore | None = None
        self._lease: Lease | None = None
        self._actuator: Actuator | None = None
        self._foresight: Foresight | None = None
        self._rollout: RolloutRunner | None = None

    @property
    def store(self) -> DesiredStore:
        if self._store is None:
            raise RuntimeError("scaler is not started")
        return self._store

    @property
    def lease(self) -> Lease:
        if self._lease is None:
            raise RuntimeError("scaler is not started")
        return self._lease

    @property
    def rollout(self) -> RolloutRunner:
        """The template rollout (`rollout.py`): its commands, its KV state and the leader's hooks."""
        if self._rollout is None:
            self._rollout = RolloutRunner(self.bus, lambda: self.fleet, lambda: self.lease.holder, lambda: self.leading,
                                          self._wake.set, self.spawn, self.clock)
        return self._rollout

    @property
    def leading(self) -> bool:
        """Holding the lease, and this term's view of the fleet is set up (only then may it act)."""
        return self._lease is not None and self._lease.leading and self._term == self._lease.epoch

    def endpoints(self) -> list[Endpoint]:
        s = self.subjects
        return [
            Endpoint("status", s.cmd_status, GetStatus, self.status),
            Endpoint("scale", s.cmd_scale, ScaleFleet, self.scale),
            Endpoint("policy", s.cmd_policy, PolicyPatch, self.set_policy),
            Endpoint("drain", s.cmd_drain, DrainVm, self.drain),
            *self.rollout.endpoints(),
        ]

    async def on_start(self) -> None:
        await self.telemetry.start()
        kv = await open_bucket(self.bus.nc, self.settings.scaler_bucket, replicas=self.settings.nats_replicas)
        self._store = DesiredStore(kv)
        await self._store.refresh()
        self._lease = Lease(kv, self.settings.scaler_id, self.settings.lease_ttl_s)
        self._foresight = Foresight(kv, self.bus)
        self._actuator = Actuator(self.bus, self, self.spawn, self.settings.scaler_request_timeout_s)
        self.rollout.attach(kv)
        await self._subscribe()
        await self.rollout.subscribe()
        self.spawn(self._lease_loop(), "scaler-lease")
        self.spawn(self._control_loop(), "scaler-control")
        self.spawn(self._resync_loop(), "scaler-resync")

    async def on_stop(self) -> None:
        self._stopping = True
        await self.telemetry.close()
        if self._foresight is not None and self.leading and self.fleet.history.means:
            with contextlib.suppress(NatsError, TimeoutError):
                await save_history(self._foresight.kv, self.fleet.history)
        if self._lease is not None:
            await self._lease.release()

    async def _subscribe(self) -> None:
        s, bus = self.subjects, self.bus
        await bus.subscribe(s.vm_all, VmStateChanged, self._on_vm)
        await bus.subscribe(s.load, FleetLoaded, self._on_load)
        await bus.subscribe(s.balancer_report, BalancerReported, self._on_report)
        await bus.subscribe(s.balancer_drained, BackendDrained, self._on_drained)
        await bus.subscribe(s.scaler_state, DesiredState, self._on_state)

    # --- events (every replica) ---

    async def _mutate(self, reducer: Reducer) -> None:
        async with self._lock:
            self.fleet = reducer(self.fleet)

    async def _on_vm(self, event: VmStateChanged, _msg: Msg) -> None:
        self.rollout.vm_seen(event)
        await self._mutate(lambda f: on_vm_event(f, event, self.clock()))
        log.info("scaler.vm_event", vm=event.vm, state=event.state.value, host=event.host)
        self._wake.set()

    async def _on_load(self, snapshot: FleetLoaded, _msg: Msg) -> None:
        now = self.clock()
        followed = follow(self._source, snapshot.source, now, self.fleet.policy.stale_after_s / 2)
        if followed is None:
            return
        if followed.name != self._source.name:
            log.info("scaler.load_source", source=followed.name, previous=self._source.name)
        self._source = followed
        at = news_at(snapshot, self.snapshot, self.load.at if self.load else now, now)
        self.snapshot, self.load = snapshot, load_view(snapshot, at)
        if self.leading:
            self.rollout.on_load(snapshot, now)
        if not self.leading:
            view, stored, known = self.load, self.store.current, self.store.revision > 0
            await self._mutate(lambda f: _witness(_with_desired(f, stored, known), view, now))
        log.debug("scaler.load", rps=snapshot.rps, outstanding=snapshot.outstanding)
        self._wake.set()

    async def _on_report(self, report: BalancerReported, _msg: Msg) -> None:
        await self._mutate(lambda f: on_report(f, report, self.clock()))
        log.debug("scaler.balancer_report", balancer=report.balancer)

    async def _on_drained(self, event: BackendDrained, _msg: Msg) -> None:
        await self._mutate(lambda f: on_drained(f, event))
        log.info("scaler.backend_drained", vm=event.vm, balancer=event.balancer, timed_out=event.timed_out)
        self._wake.set()

    async def _on_state(self, state: DesiredState, _msg: Msg) -> None:
        """Another replica's change is read once, by the control loop it wakes; our own echo is not news."""
        self.store.heard(state)
        log.debug("scaler.state_seen", desired=state.desired, news=self.store.stale)
        self._wake.set()

    # --- feedback from the actuator (leader) ---

    def created(self, request_id: str, record: VmRecord | None) -> None:
        self.spawn(self._mutate(lambda f: on_created(f, request_id, record, self.clock())), "scaler-created")

    def create_failed(self, request_id: str, counted: bool = True) -> None:
        settle = on_create_failed
        self.spawn(self._mutate(lambda f: settle(f, request_id, self.clock(), counted)), "scaler-create-failed")

    def drain_failed(self, vm: str) -> None:
        self.spawn(self._mutate(lambda f: reconcile.drain_failed(f, vm)), "scaler-drain-failed")

    async def destroyed(self, vm: str) -> None:
        await self._mutate(lambda f: forget(f, vm, self.clock()))
        if vm in self.store.current.draining:
            await self._store_change(lambda s: edits.forget_drained(s, vm))

    # --- public commands (any replica) ---

    async def status(self, _cmd: GetStatus) -> FleetStatus:
        lease = self.lease
        with contextlib.suppress(NatsError, TimeoutError, BusError):  # the status answers without it as well
            await self.rollout.sync(self.leading)
        status = edits.status(self.store.current, self.fleet, lease.holder, lease.epoch, self.snapshot, self.clock(),
                              lease.reason)
        return status.model_copy(update={"rollout": self.rollout.state})

    async def scale(self, cmd: ScaleFleet) -> DesiredState:
        return await self._store_change(lambda s: edits.scale(s, cmd, self.clock()))

    async def set_policy(self, patch: PolicyPatchBase) -> ScalingPolicy:
        return (await self._store_change(lambda s: edits.set_policy(s, patch))).policy

    async def drain(self, cmd: DrainVm) -> DesiredState:
        return await self._store_change(lambda s: edits.drain(s, cmd, self.fleet, self.clock()))

    async def _store_change(self, edit: Callable[[DesiredState], DesiredState]) -> DesiredState:
        state = await self.store.change(edit)
        await self.bus.publish(self.subjects.scaler_state, state)
        self._wake.set()
        return state

    # --- loops ---

    async def _lease_loop(self) -> None:
        """Renew or try to take the lease; a new term starts from a fresh view of the fleet."""
        while not self._stopping:
            if await self.lease.tick() and not self._stopping:
                await self._elected()
            if self._missed and self.leading:
                self._missed = False
                self._wake.set()
            await asyncio.sleep(self.lease.renew_every_s if self.lease.leading else self.settings.lease_ttl_s / 8)

    async def _elected(self) -> None:
        now, lease = self.clock(), self.lease
        stored = await load_history(self._foresight.kv) if self._foresight is not None else None
        await self._resync()
        await lease.outrank(self._obeyed)
        async with self._lock:
            seeded = AutoscaleMemory.seeded(self.store.current.desired, now)
            memory = replace(seeded, observations=self.fleet.memory.observations)
            self.fleet = new_term(self.fleet, lease.epoch, lease.me, memory)
            if stored is not None:
                self.fleet = replace(self.fleet, history=merged(self.fleet.history, stored))
            self._term = lease.epoch
        if self.store.revision == 0:
            log.info("scaler.elected", epoch=lease.epoch, desired="not set yet")
            return
        try:
            await self._store_change(lambda s: s.model_copy(update={"leader": lease.me, "epoch": lease.epoch}))
        except (BusError, NatsError, TimeoutError) as error:
            log.warning("scaler.elected_store_failed", error=str(error) or type(error).__name__)
        log.info("scaler.elected", epoch=lease.epoch)

    async def _control_loop(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.store.current.policy.evaluation_interval_s):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.store.sync(self.store.current.policy.evaluation_interval_s)
                await self.rollout.sync(self.leading)
                if self.leading:
                    await self._evaluate()
                else:
                    self._missed = True
            except (NatsError, TimeoutError, BusError) as error:
                log.warning("scaler.evaluate_failed", error=str(error) or type(error).__name__)

    async def _evaluate(self) -> None:
        """One decision: store a new size first (revision-checked), then send the commands."""
        async with self._lock:
            stored = self.store.current
            shaped = self.rollout.shape(_with_desired(self.fleet, stored, known=self.store.revision > 0), self.clock())
            decision = self.rollout.finish(decide(shaped, self.load, self.clock()))
            self.lease.reason = decision.reason[:1000]  # the lease and status fields' bound, cut once here
            if decision.changed:
                update = {"desired": decision.desired, "leader": self.lease.me, "epoch": self.lease.epoch}
                if not await self.store.write(stored.model_copy(update=update), self.store.revision):
                    log.info("scaler.decision_superseded")
                    return
            self.fleet = decision.state
        await self.rollout.save(self.fleet)
        if self._actuator is not None:
            self._actuator.send(decision.commands, self.fleet)
        if self._foresight is not None:
            await self._foresight.after(self.fleet, self.lease.me, self.clock())
        if decision.changed or decision.commands:
            await self._announce(decision)

    async def _announce(self, decision: Decision) -> None:
        """Publish the decision (and the new desired state) and log it once."""
        sig = decision.signals
        event = ScalingDecided(
            current=decision.previous_desired, desired=decision.desired, reason=decision.reason[:500],
            signal=sig.signal, observed=sig.observed, target=sig.target, leader=self.lease.me, epoch=self.lease.epoch,
        )
        await self.bus.publish(self.subjects.scaler_decision, event)
        self.telemetry.decided(event)
        if decision.changed:
            await self.bus.publish(self.subjects.scaler_state, self.store.current)
        log.info(
            "scaler.decided", current=event.current, desired=event.desired, reason=event.reason,
            commands=[type(c).__name__ for c in decision.commands], epoch=event.epoch,
        )

    async def _resync_loop(self) -> None:
        while not self._stopping:
            try:
                await self._resync()
            except (NatsError, TimeoutError) as error:
                log.warning("scaler.resync_failed", error=str(error) or type(error).__name__)
            await asyncio.sleep(self.settings.scaler_resync_s)

    async def _resync(self) -> None:
        """Ask every provisioner what it runs; libvirt is the source of truth for the VM list."""
        asked = self.clock()
        lists = await self.bus.gather(self.subjects.prov_list, ListVms(), VmList, window=1.0)
        if lists:
            hosts = {vl.host: vl.max_vms for vl in lists}
            records = [(vl.host, vl.vms) for vl in lists]
            now = self.clock()
            await self._mutate(lambda f: on_heard(
                on_capacity(on_hosts(on_lists(f, records, asked, now), hosts), lists), hosts, now
            ))
            self._obeyed = max(vl.epoch for vl in lists)
            self.rollout.on_lists(lists)
            if self.leading and await self.lease.outrank(self._obeyed):
                await self._elected()


def _witness(fleet: FleetState, load: LoadView, now: float) -> FleetState:
    """A follower's demand history, measured on the serving fleet alone (as the leader's `decide` does), and its
    minute history (`predict.learn`), so a new leader forecasts from the minutes it saw as a follower."""
    return replace(learn(fleet, load, now), memory=witness(without_pool(fleet), load, now).memory)


def _with_desired(fleet: FleetState, stored: DesiredState, known: bool) -> FleetState:
    """The KV desired state (which any replica may have changed) copied into the fleet view."""
    hold = stored.hold_until.timestamp() if stored.hold_until else None
    return replace(
        fleet, desired=stored.desired, policy=stored.policy, hold_until=hold,
        drain_requests=frozenset(stored.draining), desired_known=known,
    )
