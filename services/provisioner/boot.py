"""One VM's way from `requested` to `ready` (or into the warm pool): plan, clone, start, find its address, probe it.

Each VM runs as one task. Blocking libvirt steps run in a thread and are finished even when the
task is cancelled (a destroy arriving mid-clone), so the teardown that follows never races a
half-done define or start. Any failure becomes `failed` with a reason, then a clean teardown.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Protocol, TypeVar

import structlog

from services.provisioner import execute
from services.provisioner.core.addresses import pick_address
from services.provisioner.core.clone import ClonePlanError, interface_count, plan_clone
from services.provisioner.core.machine import VmEntry
from services.provisioner.core.ports import Hypervisor, HypervisorError, Template, TemplateMissing
from services.provisioner.core.tags import VmTag, template_identity
from services.provisioner.identities import random_macs, random_uuid
from services.provisioner.settings import ProvisionerSettings
from shared.contract.base import ErrorCode
from shared.contract.events import VmState
from shared.errors import BusError

log = structlog.get_logger("provisioner.boot")
T = TypeVar("T")
_FIRST_DELAY_S = 0.2
_MAX_DELAY_S = 3.0


Probe = Callable[[str, str | None], Awaitable[str | None]]
"""An HTTP/3 readiness check of an address (and, when given, of the UUID it must answer as):
None when it answered, else what was seen."""


class FleetView(Protocol):
    """What a VM's boot needs from the fleet that runs it (`fleet.Fleet` is the one).

    The fleet starts the boot and hands itself in, so this module does not import the fleet.
    """

    settings: ProvisionerSettings
    hv: Hypervisor
    probe: Probe
    entries: dict[str, VmEntry]
    epoch: int
    slots: asyncio.Semaphore

    async def advance(self, name: str, to: VmState, *, address: str | None = None, reason: str | None = None) -> None:
        ...

    async def remove(self, name: str, reason: str | None) -> None: ...


class NotReady(Exception):
    """The VM did not answer HTTP/3 before its deadline; the message says what was last seen."""


async def load_template(hv: Hypervisor, template: str) -> Template:
    """The template, or an `unavailable` reply naming the template and the libvirt URI."""
    try:
        return await asyncio.to_thread(hv.template, template)
    except TemplateMissing as error:
        raise BusError(ErrorCode.UNAVAILABLE, f"cannot clone: {error}") from None
    except HypervisorError as error:
        message = f"cannot read template '{template}' on {hv.describe()}: {error}"
        raise BusError(ErrorCode.UNAVAILABLE, message) from None


async def finish(call: Callable[[], T]) -> T:
    """Run a blocking step in a thread to its end, even if the waiting task is cancelled meanwhile."""
    future = asyncio.ensure_future(asyncio.to_thread(call))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.wait([future])
        raise


async def provision(fleet: FleetView, name: str, template: Template) -> None:
    """Clone and boot `name` (at most `provisioner_max_in_flight` at once), wait for readiness, then settle it."""
    try:
        async with fleet.slots:
            await _clone_and_start(fleet, name, template)
            await settle(fleet, name, await await_ready(fleet, name))
    except (ClonePlanError, HypervisorError, NotReady) as error:
        await give_up(fleet, name, error)


async def watch_ready(fleet: FleetView, name: str) -> None:
    """For a VM adopted after a restart: wait for readiness and settle it, remove it if it never comes."""
    try:
        await settle(fleet, name, await await_ready(fleet, name))
    except (HypervisorError, NotReady) as error:
        await give_up(fleet, name, error)


async def give_up(fleet: FleetView, name: str, error: Exception) -> None:
    """Fail and remove a VM whose clone or boot went wrong. When libvirt cannot finish the teardown
    now (libvirtd restarting: the usual reason a clone failed at all), the VM is already `failed`
    and the reconcile reaps what is left once libvirt answers; that is logged, not a crashed task."""
    try:
        await fleet.remove(name, reason=str(error))
    except BusError as incomplete:
        log.warning("vm.remove_incomplete", vm=name, error=incomplete.message, left_to="reconcile")


async def settle(fleet: FleetView, name: str, address: str) -> None:
    """A VM that answered becomes `ready`; one made for the warm pool is paused and becomes `pooled` instead.

    The pause is written on the entry before libvirt makes it, so libvirt's SUSPENDED event of our
    own pause is no news (`pauses.with_pause`) and no `booting, paused` VM is ever published.
    """
    if not fleet.entries[name].pooled:
        await fleet.advance(name, VmState.READY, address=address)
        return
    fleet.entries[name] = replace(fleet.entries[name], paused=True)
    await finish(lambda: fleet.hv.suspend(name))
    await fleet.advance(name, VmState.POOLED, address=address)


async def _clone_and_start(fleet: FleetView, name: str, template: Template) -> None:
    await fleet.advance(name, VmState.CLONING)
    entry = fleet.entries[name]
    settings = fleet.settings
    identity = checks_identity(settings.ready_identity, template.xml)
    tag = VmTag(
        settings.fleet_id, entry.request_id, entry.created_at, settings.host, entry.address, epoch=fleet.epoch,
        identity=identity, pooled=entry.pooled,
    )
    macs = random_macs(interface_count(template.xml))
    plan = plan_clone(template.xml, name, macs, tag, template.sources, settings.clone_mode, uuid=random_uuid())
    fleet.entries[name] = replace(entry, macs=plan.macs, volumes=plan.tag.volumes, uuid=plan.uuid, identity=identity)
    await finish(lambda: execute.define_and_create_storage(fleet.hv, plan))
    await finish(lambda: execute.start(fleet.hv, plan))
    await fleet.advance(name, VmState.BOOTING)


def checks_identity(setting: str, template_xml: str) -> bool:
    """Whether clones of this template must prove their UUID: `on`, or `auto` and the template says it can."""
    return setting == "on" or (setting == "auto" and template_identity(template_xml))


async def await_ready(fleet: FleetView, name: str) -> str:
    """The VM's address once it answers (as itself, when it proves its identity), probed with backoff.

    Raises NotReady with what was last seen when `boot_timeout_s` runs out.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + fleet.settings.boot_timeout_s
    delay = _FIRST_DELAY_S
    while True:
        entry = fleet.entries[name]
        address = entry.address or await _discover(fleet, name)
        expected = entry.uuid if entry.identity else None
        last = await fleet.probe(address, expected) if address else _no_address(fleet, name)
        if address and last is None:
            return address
        if loop.time() + delay > deadline:
            raise NotReady(f"not ready within {fleet.settings.boot_timeout_s:g} s: {last}")
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, _MAX_DELAY_S)


async def _discover(fleet: FleetView, name: str) -> str | None:
    strategy = fleet.settings.address_strategy
    if strategy == "static":
        return None
    interfaces = await asyncio.to_thread(fleet.hv.interface_addresses, name, strategy)
    return pick_address(interfaces, fleet.entries[name].macs, fleet.settings.backend_port)


def _no_address(fleet: FleetView, name: str) -> str:
    settings = fleet.settings
    macs = ", ".join(fleet.entries[name].macs) or "none"
    if settings.address_strategy == "static":
        return "no static address was assigned"
    where = "the guest agent"
    if settings.address_strategy == "lease":
        where = f"a DHCP lease on network '{settings.network}'"
    return f"no address from {where} for MAC(s) {macs}"
