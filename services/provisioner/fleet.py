"""The provisioner's bookkeeping: one entry per VM, every state change published, commands checked.

`Fleet` owns the table of VMs and the rules around commands (leader epoch, request ids, the VM
ceiling, ownership). The long work of one VM (clone, boot, readiness) lives in `boot.py`, the warm
pool's in `pool.py`; the pure decisions live in `machine.py`, `clone.py`, `reconcile.py`, `pauses.py`,
`pool.py`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import asdict
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

import structlog

from services.provisioner.boot import Probe, load_template, provision, watch_ready
from services.provisioner.core.addresses import free_static, parse_static_pool
from services.provisioner.core.capacity import Capacity
from services.provisioner.core.machine import (
    IN_LIBVIRT,
    RUNNING,
    VmEntry,
    adopted,
    can_become,
    requested,
    to_record,
    transition,
)
from services.provisioner.core.pauses import paused_by, plan_pauses, with_pause
from services.provisioner.core.ports import (
    DomainEvent,
    DomainEventKind,
    DomainView,
    Hypervisor,
    HypervisorError,
    Template,
)
from services.provisioner.core.reconcile import (
    Action,
    Adopt,
    Remove,
    RemoveVolume,
    is_ours,
    plan_reconcile,
    plan_volumes,
)
from services.provisioner.core.tags import template_addresses
from services.provisioner.execute import clone_disks, teardown
from services.provisioner.room import RoomReader
from services.provisioner.settings import ProvisionerSettings
from services.provisioner.warmpool import adopted_entry, pick, take, taken
from shared.contract.base import ErrorCode, utcnow
from shared.contract.events import LIVE_STATES, VmState, VmStateChanged
from shared.contract.provisioning import CreateVm, DestroyVm, VmList, VmRecord
from shared.errors import BusError

log = structlog.get_logger("provisioner.fleet")

Publish = Callable[[VmEntry], Awaitable[None]]
_EVENT_REASONS = {
    DomainEventKind.CRASHED: "the VM crashed (libvirt reported it)",
    DomainEventKind.STOPPED: "the VM was powered off outside quicfleet",
    DomainEventKind.UNDEFINED: "the VM was undefined outside quicfleet",
}
_KEEP_FINISHED = 1000
P = ParamSpec("P")
T = TypeVar("T")


class Fleet:
    """This host's VMs and the commands that change them."""

    def __init__(
        self, settings: ProvisionerSettings, hv: Hypervisor, probe: Probe, publish: Publish,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.hv = hv
        self.probe = probe
        self._publish = publish
        self.clock = clock
        self.entries: dict[str, VmEntry] = {}
        self.by_request: dict[str, str] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.removing: dict[str, asyncio.Event] = {}
        self.epoch = 0
        self.slots = asyncio.Semaphore(settings.provisioner_max_in_flight)
        self.pool = parse_static_pool(settings.static_addresses, settings.backend_port)
        self.room = RoomReader(hv, settings.template)

    # --- state table -------------------------------------------------------------------------
    async def advance(self, name: str, to: VmState, *, address: str | None = None, reason: str | None = None) -> None:
        """Move a VM to `to` and publish it (refused transitions are logged and skipped)."""
        entry = self.entries[name]
        if not can_become(entry, to):
            log.info("vm.transition_skipped", vm=name, state=entry.state.value, to=to.value)
            return
        await self.put(transition(entry, to, self.clock(), address=address, reason=reason))

    async def put(self, entry: VmEntry) -> None:
        self.entries[entry.name] = entry
        if entry.request_id:
            self.by_request[entry.request_id] = entry.name
        log.info("vm.state", vm=entry.name, state=entry.state.value, address=entry.address, reason=entry.reason)
        await self._publish(entry)
        self._prune()

    def _prune(self) -> None:
        finished = [e for e in self.entries.values() if e.finished]
        for entry in sorted(finished, key=lambda e: e.since)[: max(0, len(finished) - _KEEP_FINISHED)]:
            del self.entries[entry.name]
            # every request id of the VM: a VM taken from the pool answers to its pooled create's id too
            for request_id in [r for r, name in self.by_request.items() if name == entry.name]:
                del self.by_request[request_id]

    def live(self) -> list[VmEntry]:
        return [e for e in self.entries.values() if e.state in LIVE_STATES]

    def records(self) -> VmList:
        host = self.settings.host
        return VmList(host=host, vms=[to_record(e, host) for e in self.live()], max_vms=self.settings.max_vms,
                      epoch=self.epoch)

    async def listing(self) -> VmList:
        """The list reply: `records` and the host's room (`capacity`).

        The VMs are taken before libvirt is asked: one that starts in between is then counted twice by
        the scaler (its memory gone from the free figure, and not listed as running), never missed.
        """
        listed = self.records()
        capacity = await self.capacity()
        return listed.model_copy(update=asdict(capacity))  # `measure` bounded every figure as VmList does

    async def capacity(self) -> Capacity:
        """The host's room for a list reply (`room.RoomReader`: in time, or left out)."""
        return await self.room.capacity()

    async def republish(self) -> None:
        """Announce every live VM again, so a restarted subscriber learns the fleet."""
        for entry in self.live():
            await self._publish(entry)

    # --- commands ----------------------------------------------------------------------------
    def check_epoch(self, epoch: int) -> None:
        if epoch < self.epoch:
            raise BusError(
                ErrorCode.CONFLICT, f"epoch {epoch} is older than {self.epoch}: a newer scaler leader is in charge"
            )
        self.epoch = epoch

    async def create(self, command: CreateVm) -> VmRecord:
        """Accept a create: reply at once, with a VM taken from the warm pool (plain creates) or else with the
        `requested` record of a new clone; the resume or the clone runs in the background."""
        self.check_epoch(command.epoch)
        if (known := self._known(command.request_id)) is not None:
            return known
        if not command.pooled and (pooled := pick(self.entries, self.removing)) is not None:
            return await self._take(pooled, command.request_id)
        self._check_room()
        template = await load_template(self.hv, self.settings.template)
        # checked again: another create may have run while the template was read
        if (known := self._known(command.request_id)) is not None:
            return known
        self._check_room()
        name = f"{self.settings.vm_prefix}{uuid.uuid4().hex[:8]}"
        address = self._static_address(template)
        await self.put(requested(name, command.request_id, self.clock(), address, pooled=command.pooled))
        self._spawn(name, provision(self, name, template))
        return to_record(self.entries[name], self.settings.host)

    async def _take(self, name: str, request_id: str) -> VmRecord:
        """Hand out pooled VM `name`: marked taken (`booting`, the new request id) before any await, so no
        other create can pick it, then resumed in the background (`pool.take`)."""
        static = self.settings.address_strategy == "static"
        await self.put(taken(self.entries[name], request_id, self.clock(), static))
        log.info("vm.taken_from_pool", vm=name, request_id=request_id)
        self._spawn(name, take(self, name))
        return to_record(self.entries[name], self.settings.host)

    def _known(self, request_id: str) -> VmRecord | None:
        name = self.by_request.get(request_id)
        return None if name is None else to_record(self.entries[name], self.settings.host)

    def _check_room(self) -> None:
        held = sum(1 for entry in self.entries.values() if entry.state in IN_LIBVIRT)
        if held >= self.settings.max_vms:
            raise BusError(
                ErrorCode.UNAVAILABLE,
                f"host {self.settings.host} already holds {held} VM(s), its ceiling (max_vms={self.settings.max_vms})",
            )

    def _static_address(self, template: Template) -> str | None:
        """Next free address of the setting's pool, or else of the template's metadata pool."""
        if self.settings.address_strategy != "static":
            return None
        pool = self.pool or _template_pool(template, self.settings.backend_port)
        used = [e.address for e in self.entries.values() if e.state in IN_LIBVIRT]
        address = free_static(pool, used)
        if address is None:
            raise BusError(ErrorCode.UNAVAILABLE, f"all {len(pool)} static addresses are in use")
        return address

    async def destroy(self, command: DestroyVm) -> VmRecord:
        """Tear one of our VMs down; already gone is fine, someone else's is `not_found`."""
        self.check_epoch(command.epoch)
        name = command.vm
        view = await _call(self.hv.domain, name)
        entry = self.entries.get(name)
        if view is not None and not is_ours(view, self.settings.fleet_id, self.settings.host):
            raise BusError(ErrorCode.NOT_FOUND, f"{name} is not a VM of fleet {self.settings.fleet_id} on this host")
        if view is None and entry is None:
            return self._gone(name, command.request_id)
        if entry is None and view is not None and view.tag is not None:
            entry = adopted(name, VmState.BOOTING, self.clock(), view.tag, view.macs, view.uuid)
            self.entries[name] = entry
        await self.remove(name, reason=None)
        return to_record(self.entries[name], self.settings.host)

    def _gone(self, name: str, request_id: str) -> VmRecord:
        if not name.startswith(self.settings.vm_prefix):
            raise BusError(ErrorCode.NOT_FOUND, f"{name} is not a VM of fleet {self.settings.fleet_id} on this host")
        return VmRecord(vm=name, state=VmState.DESTROYED, since=self.clock(), request_id=request_id,
                        host=self.settings.host)

    # --- removal -----------------------------------------------------------------------------
    async def remove(self, name: str, reason: str | None) -> None:
        """Stop any work on the VM, publish `failed` when `reason` is given, tear down, publish `destroyed`.

        A second removal of the same VM while one runs waits for the first instead of racing it.
        """
        if (running := self.removing.get(name)) is not None:
            await running.wait()
            return
        done = self.removing[name] = asyncio.Event()
        try:
            await self._cancel(name)
            if reason is not None:
                await self.advance(name, VmState.FAILED, reason=reason)
            problems = await asyncio.to_thread(teardown, self.hv, name, self.entries[name].volumes)
            if problems:
                raise BusError(ErrorCode.UNAVAILABLE, f"could not fully remove {name}: " + "; ".join(problems))
            await self.advance(name, VmState.DESTROYED)
        finally:
            del self.removing[name]
            done.set()

    async def _cancel(self, name: str) -> None:
        task = self.tasks.pop(name, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            await asyncio.wait([task])

    def _spawn(self, name: str, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work, name=f"vm-{name}")
        self.tasks[name] = task
        task.add_done_callback(lambda done: self._finished(name, done))

    def _finished(self, name: str, task: asyncio.Task[None]) -> None:
        if self.tasks.get(name) is task:
            del self.tasks[name]
        if not task.cancelled() and task.exception() is not None:
            log.error("vm.task_crashed", vm=name, error=type(task.exception()).__name__, exc_info=task.exception())

    async def stop(self) -> None:
        """Stop working on VMs (the next start's reconcile finishes or cleans them)."""
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def note_draining(self, event: VmStateChanged) -> None:
        """The scaler announced a drain: remember it, so republishing never calls the VM ready again."""
        entry = self.entries.get(event.vm)
        if entry is None or event.host not in (None, self.settings.host) or not can_become(entry, VmState.DRAINING):
            return
        self.entries[event.vm] = transition(entry, VmState.DRAINING, self.clock(), reason=event.reason)
        log.info("vm.draining_noted", vm=event.vm, request_id=event.request_id)

    # --- libvirt events and reconcile ----------------------------------------------------------
    async def on_domain_event(self, event: DomainEvent) -> None:
        """A VM stopped, crashed or vanished behind our back: report it failed and clean it up.

        A pause or a resume changes no state: the VM is republished at once with the new flag.
        """
        if (paused := paused_by(event.kind)) is not None:
            if self._note_pause(event.name, paused, event.detail):
                await self._publish(self.entries[event.name])
            return
        entry = self.entries.get(event.name)
        reason = _EVENT_REASONS.get(event.kind)
        if entry is None or reason is None or event.name in self.removing:
            return
        if entry.state in RUNNING:
            log.warning("vm.lost", vm=event.name, kind=event.kind.value, detail=event.detail)
            await self._quietly(self.remove(event.name, reason))

    def _note_pause(self, name: str, paused: bool, detail: str) -> bool:
        """Keep libvirt's word that a VM is paused (or no longer); True when that is news."""
        entry = None if name in self.removing else with_pause(self.entries.get(name), paused)
        if entry is not None:
            self.entries[name] = entry
            note = log.warning if paused else log.info
            note("vm.paused" if paused else "vm.resumed", vm=name, state=entry.state.value, detail=detail)
        return entry is not None

    async def reconcile(self) -> None:
        """Bring the table (pause flags too) and our disks in line with libvirt, then republish every live VM.

        Disks are listed before domains: a clone defines its domain before it makes its disks, so a
        disk listed here whose domain is missing from the later listing is not one being made.
        """
        disks = await asyncio.to_thread(clone_disks, self.hv, self.settings.template)
        before = dict(self.entries)
        views = await _call(self.hv.domains)
        self._recall_epoch(views)
        busy = set(self.tasks) | set(self.removing)
        s = self.settings
        actions = plan_reconcile(views, self.entries, busy, s.fleet_id, s.host)
        actions += plan_volumes(disks, views, busy, s.vm_prefix, s.fleet_id, s.host)
        for action in actions:
            await self._quietly(self._apply(action))
        for name, paused in plan_pauses(views, before, self.entries):
            self._note_pause(name, paused, "found by reconcile")
        await self.republish()

    def _recall_epoch(self, views: list[DomainView]) -> None:
        """The highest epoch in our VMs' tags: a restarted provisioner still refuses a deposed leader."""
        fleet, host = self.settings.fleet_id, self.settings.host
        self.epoch = max([self.epoch, *(v.tag.epoch for v in views if v.tag is not None and is_ours(v, fleet, host))])

    async def _apply(self, action: Action) -> None:
        if isinstance(action, RemoveVolume):
            if await _call(self.hv.delete_volume, action.volume.path):
                log.warning("volume.orphan_removed", volume=action.volume.name, path=action.volume.path,
                            reason=action.reason)
        elif isinstance(action, Adopt):
            await self._adopt(action.view)
        elif isinstance(action, Remove):
            self._track(action.view)
            await self.remove(action.view.name, action.reason)
        else:
            await self.advance(action.name, VmState.FAILED, reason=action.reason)
            await self.advance(action.name, VmState.DESTROYED)

    def _track(self, view: DomainView) -> None:
        if view.name not in self.entries and view.tag is not None:
            self.entries[view.name] = adopted(view.name, VmState.BOOTING, self.clock(), view.tag, view.macs, view.uuid)

    async def _adopt(self, view: DomainView) -> None:
        entry = adopted_entry(view, self.clock())
        log.info("vm.adopted", vm=view.name, request_id=entry.request_id, state=entry.state.value)
        await self.put(entry)
        if entry.state is VmState.BOOTING:
            self._spawn(view.name, watch_ready(self, view.name))

    async def _quietly(self, work: Awaitable[None]) -> None:
        """Event and reconcile work is logged on failure; it must not stop the loop that runs it."""
        try:
            await work
        except (BusError, HypervisorError) as error:
            log.error("vm.cleanup_failed", error=getattr(error, "message", str(error)))


def _template_pool(template: Template, port: int) -> tuple[str, ...]:
    try:
        return parse_static_pool(template_addresses(template.xml), port)
    except ValueError as error:
        raise BusError(ErrorCode.UNAVAILABLE, f"template {template.name} has bad static addresses: {error}") from None


async def _call(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run a blocking hypervisor call in a thread; its failure becomes an `unavailable` reply."""
    try:
        return await asyncio.to_thread(fn, *args, **kwargs)
    except HypervisorError as error:
        raise BusError(ErrorCode.UNAVAILABLE, str(error)) from None
