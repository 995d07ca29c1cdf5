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
from nats.errors import Error as NatsError

from services.scaler.actuator import Actuator
from services.scaler.core import edits, reconcile
from services.scaler.core.decide import decide
from services.scaler.core.history import merged
from services.scaler.core.model import AutoscaleMemory, Decision, FleetState, LoadView
from services.scaler.core.track import (
    forget,
    new_term,
    on_capacity,
    on_create_failed,
    on_created,
    on_heard,
    on_hosts,
    on_lists,
)
from services.scaler.events import FleetEvents, Reducer, with_desired
from services.scaler.foresight import Foresight, load_history, save_history
from services.scaler.lease import Lease
from services.scaler.rollout import RolloutRunner
from services.scaler.settings import ScalerSettings
from services.scaler.store import DesiredStore
from services.scaler.telemetry import ScalerTelemetry
from shared.bus import Bus
from shared.contract.commands import DrainVm, GetStatus, PolicyPatch, ScaleFleet
from shared.contract.events import ScalingDecided
from shared.contract.load import FleetLoaded
from shared.contract.policy import PolicyPatchBase, ScalingPolicy
from shared.contract.provisioning import ListVms, VmList, VmRecord
from shared.contract.status import DesiredState, FleetStatus
from shared.endpoints import Endpoint
from shared.errors import BusError
from shared.kv import open_bucket
from shared.runtime import BusService

log = structlog.get_logger("services.scaler")


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
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._events = FleetEvents(self, self._mutate, self._wake.set)
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
        await self._events.subscribe(self.bus)
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

    # --- events (every replica; the handlers are in `events.py`) ---

    async def _mutate(self, reducer: Reducer) -> None:
        async with self._lock:
            self.fleet = reducer(self.fleet)

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
            shaped = self.rollout.shape(with_desired(self.fleet, stored, known=self.store.revision > 0), self.clock())
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
