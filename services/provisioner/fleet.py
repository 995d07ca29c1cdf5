"""The provisioner's commands and its watch on libvirt, over the one table of VMs (`table.VmTable`).

`Fleet` checks each command against the rules of `core/commands.py` (leader epoch, request ids,
the VM ceiling, static addresses, drains) and ownership, then changes the table; the long work of
one VM (clone and boot in `boot.py`, a take in `warmpool.py`) runs as the VM's task and yields the
changes it wants, which the table applies. Refusals are raised as `core/errors.py` classes and
put into bus errors by `service.py`. libvirt's lifecycle events and the periodic reconcile bring
the table in line with libvirt (`core/reconcile.py`, `core/pauses.py` decide; this carries out).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import datetime

import structlog

from services.provisioner.boot import Probe, Tools, load_template, provision, watch_ready
from services.provisioner.core.addresses import parse_static_pool
from services.provisioner.core.capacity import Capacity
from services.provisioner.core.commands import check_room, draining, obeyed_epoch, static_address
from services.provisioner.core.errors import CannotClone, NotOurs, Refused
from services.provisioner.core.machine import RUNNING, adopted, requested, to_record
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
from services.provisioner.core.versions import version_domain_name
from services.provisioner.core.warmpool import adopted_entry, pick, taken
from services.provisioner.execute import clone_disks
from services.provisioner.room import RoomReader
from services.provisioner.settings import ProvisionerSettings
from services.provisioner.table import Publish, VmTable
from services.provisioner.warmpool import take
from shared.contract.base import utcnow
from shared.contract.events import VmState
from shared.contract.provisioning import CreateVm, DestroyVm, StartDrain, VmList, VmRecord

log = structlog.get_logger("provisioner.fleet")

_EVENT_REASONS = {
    DomainEventKind.CRASHED: "the VM crashed (libvirt reported it)",
    DomainEventKind.STOPPED: "the VM was powered off outside quicfleet",
    DomainEventKind.UNDEFINED: "the VM was undefined outside quicfleet",
}


class Fleet(VmTable):
    """This host's VMs and the commands that change them."""

    def __init__(
        self, settings: ProvisionerSettings, hv: Hypervisor, probe: Probe, publish: Publish,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        super().__init__(settings, hv, publish, clock)
        self.probe = probe
        self.epoch = 0
        self.slots = asyncio.Semaphore(settings.provisioner_max_in_flight)
        self.addresses = parse_static_pool(settings.static_addresses, settings.backend_port)
        """The configured static addresses (empty: the template's own list, read at each create)."""
        self.room = RoomReader(hv, settings.template)

    def _tools(self) -> Tools:
        """What a VM's steps get: read at each start, so a probe swapped in (tests) is the one used."""
        return Tools(self.settings, self.hv, self.probe)

    # --- answers -----------------------------------------------------------------------------
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

    def _record(self, name: str) -> VmRecord:
        return to_record(self.entries[name], self.settings.host)

    # --- commands ----------------------------------------------------------------------------
    def check_epoch(self, epoch: int) -> None:
        self.epoch = obeyed_epoch(self.epoch, epoch)

    async def create(self, command: CreateVm) -> VmRecord:
        """Accept a create: reply at once, with a VM taken from the warm pool (plain creates) or else with the
        `requested` record of a new clone; the resume or the clone runs in the background."""
        self.check_epoch(command.epoch)
        if (known := self._known(command.request_id)) is not None:
            return known
        if not command.pooled and (pooled := pick(self.entries, self.removing, command.version)) is not None:
            return await self._take(pooled, command.request_id)
        check_room(self.entries.values(), self.settings.max_vms, self.settings.host)
        template = await self._load(command.version)
        # checked again: another create may have run while the template was read
        if (known := self._known(command.request_id)) is not None:
            return known
        s = self.settings
        check_room(self.entries.values(), s.max_vms, s.host)
        address = None
        if s.address_strategy == "static":
            address = static_address(self.addresses, template.xml, template.name, s.backend_port, self.entries.values())
        name = f"{s.vm_prefix}{uuid.uuid4().hex[:8]}"
        await self.put(
            requested(name, command.request_id, self.clock(), address, pooled=command.pooled, version=command.version)
        )
        self.spawn(name, provision(self._tools(), self.entries[name], template, command.epoch, self.slots))
        return self._record(name)

    async def _load(self, version: str | None) -> Template:
        """The domain a create clones: the template itself, or the version's domain (`core/versions.py`), which
        exists only once the version's base is complete and checked on this host."""
        s = self.settings
        if version is None:
            return await load_template(self.hv, s.template)
        try:
            return await load_template(self.hv, version_domain_name(s.template, version, s.host))
        except CannotClone as error:
            raise CannotClone(f"template version {version} is not ready on {s.host}: {error}") from None

    async def _take(self, name: str, request_id: str) -> VmRecord:
        """Hand out pooled VM `name`: marked taken (`booting`, the new request id) before any await, so no
        other create can pick it, then resumed in the background (`warmpool.take`)."""
        static = self.settings.address_strategy == "static"
        await self.put(taken(self.entries[name], request_id, self.clock(), static))
        log.info("vm.taken_from_pool", vm=name, request_id=request_id)
        self.spawn(name, take(self._tools(), self.entries[name], self.epoch))
        return self._record(name)

    def _known(self, request_id: str) -> VmRecord | None:
        name = self.by_request.get(request_id)
        return None if name is None else self._record(name)

    async def destroy(self, command: DestroyVm) -> VmRecord:
        """Tear one of our VMs down; already gone is fine, someone else's is NotOurs."""
        self.check_epoch(command.epoch)
        name = command.vm
        view = await asyncio.to_thread(self.hv.domain, name)
        entry = self.entries.get(name)
        if view is not None and not is_ours(view, self.settings.fleet_id, self.settings.host):
            raise NotOurs(f"{name} is not a VM of fleet {self.settings.fleet_id} on this host")
        if view is None and entry is None:
            return self._gone(name, command.request_id)
        if entry is None and view is not None and view.tag is not None:
            self.entries[name] = adopted(name, VmState.BOOTING, self.clock(), view.tag, view.macs, view.uuid)
        await self.remove(name, reason=None)
        return self._record(name)

    def _gone(self, name: str, request_id: str) -> VmRecord:
        if not name.startswith(self.settings.vm_prefix):
            raise NotOurs(f"{name} is not a VM of fleet {self.settings.fleet_id} on this host")
        return VmRecord(vm=name, state=VmState.DESTROYED, since=self.clock(), request_id=request_id,
                        host=self.settings.host)

    async def drain(self, command: StartDrain) -> VmRecord:
        """Take a ready VM out of service: `draining` with the balancers' deadline, published once, here only.

        Idempotent: a VM that drains already is answered as it is, and nothing is published again.
        """
        self.check_epoch(command.epoch)
        reason = f"asked to drain (request {command.request_id})"
        marked = draining(self.entries.get(command.vm), command.vm, self.clock(), command.deadline_s, reason)
        if marked is not None:
            await self.put(marked)
        return self._record(command.vm)

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
        views = await asyncio.to_thread(self.hv.domains)
        self._recall_epoch(views)
        busy = set(self.tasks) | set(self.removing)
        s = self.settings
        actions = plan_reconcile(views, self.entries, busy, s.fleet_id, s.host)
        actions += plan_volumes(disks, views, busy, s.vm_prefix, s.fleet_id, s.host)
        for action in actions:
            await self._quietly(self._carry_out(action))
        for name, paused in plan_pauses(views, before, self.entries):
            self._note_pause(name, paused, "found by reconcile")
        await self.republish()

    def _recall_epoch(self, views: list[DomainView]) -> None:
        """The highest epoch in our VMs' tags: a restarted provisioner still refuses a deposed leader."""
        fleet, host = self.settings.fleet_id, self.settings.host
        self.epoch = max([self.epoch, *(v.tag.epoch for v in views if v.tag is not None and is_ours(v, fleet, host))])

    async def _carry_out(self, action: Action) -> None:
        if isinstance(action, RemoveVolume):
            if await asyncio.to_thread(self.hv.delete_volume, action.volume.path):
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
            self.spawn(view.name, watch_ready(self._tools(), entry))

    async def _quietly(self, work: Awaitable[None]) -> None:
        """Event and reconcile work is logged on failure; it must not stop the loop that runs it."""
        try:
            await work
        except (Refused, HypervisorError) as error:
            log.error("vm.cleanup_failed", error=str(error))
