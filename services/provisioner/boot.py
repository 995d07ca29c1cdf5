"""One VM's way from `requested` to `ready` (or into the warm pool): plan, clone, start, find its address, probe it.

Each VM runs as one task (`table.VmTable.spawn`). The steps here hold no table: they start from
the VM's entry as it was handed over and *yield* the changes they want (`core/changes.py`), which
the table applies and publishes. Blocking libvirt steps run in a thread and are finished even
when the task is cancelled (a destroy arriving mid-clone), so the teardown that follows never
races a half-done define or start. Any failure is yielded as `Fail` with a reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TypeVar

import structlog

from services.provisioner import execute
from services.provisioner.core.addresses import pick_address
from services.provisioner.core.changes import Advance, Change, Fail, Learn
from services.provisioner.core.clone import ClonePlan, ClonePlanError, interface_count, plan_clone
from services.provisioner.core.errors import CannotClone
from services.provisioner.core.machine import VmEntry
from services.provisioner.core.ports import Hypervisor, HypervisorError, Template, TemplateMissing
from services.provisioner.core.tags import VmTag, template_identity
from services.provisioner.identities import random_macs, random_uuid
from services.provisioner.settings import ProvisionerSettings
from shared.contract.events import VmState

log = structlog.get_logger("provisioner.boot")
T = TypeVar("T")
_FIRST_DELAY_S = 0.2
_MAX_DELAY_S = 3.0


Probe = Callable[[str, str | None], Awaitable[str | None]]
"""An HTTP/3 readiness check of an address (and, when given, of the UUID it must answer as):
None when it answered, else what was seen."""


@dataclass(frozen=True)
class Tools:
    """What a VM's steps work with: the settings, libvirt and the readiness probe (and no table)."""

    settings: ProvisionerSettings
    hv: Hypervisor
    probe: Probe


class NotReady(Exception):
    """The VM did not answer HTTP/3 before its deadline; the message says what was last seen."""


async def load_template(hv: Hypervisor, template: str) -> Template:
    """The template, or CannotClone naming the template and the libvirt URI."""
    try:
        return await asyncio.to_thread(hv.template, template)
    except TemplateMissing as error:
        raise CannotClone(f"cannot clone: {error}") from None
    except HypervisorError as error:
        raise CannotClone(f"cannot read template '{template}' on {hv.describe()}: {error}") from None


async def finish(call: Callable[[], T]) -> T:
    """Run a blocking step in a thread to its end, even if the waiting task is cancelled meanwhile."""
    future = asyncio.ensure_future(asyncio.to_thread(call))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.wait([future])
        raise


async def provision(
    tools: Tools, entry: VmEntry, template: Template, epoch: int, slots: asyncio.Semaphore
) -> AsyncGenerator[Change, None]:
    """Clone and boot the `requested` VM `entry` (at most `provisioner_max_in_flight` at once), wait for
    readiness, then settle it; `epoch` (the leader's that asked) goes into its tag."""
    try:
        async with slots:
            plan, identity = plan_for(tools.settings, entry, template, epoch)
            # in the table before libvirt holds anything: a destroy mid-clone then knows the volumes
            facts = Learn(macs=plan.macs, volumes=plan.tag.volumes, uuid=plan.uuid, identity=identity)
            yield Advance(VmState.CLONING, learnt=facts)
            await finish(lambda: execute.define_and_create_storage(tools.hv, plan))
            await finish(lambda: execute.start(tools.hv, plan))
            yield Advance(VmState.BOOTING)
            booted = replace(entry, macs=plan.macs, uuid=plan.uuid, identity=identity)
            address = await await_ready(tools, booted)
            async for change in settle(tools.hv, booted, address):
                yield change
    except (ClonePlanError, HypervisorError, NotReady) as error:
        yield Fail(str(error))


async def watch_ready(tools: Tools, entry: VmEntry) -> AsyncGenerator[Change, None]:
    """For a VM adopted after a restart: wait for readiness and settle it, remove it if it never comes."""
    try:
        address = await await_ready(tools, entry)
        async for change in settle(tools.hv, entry, address):
            yield change
    except (HypervisorError, NotReady) as error:
        yield Fail(str(error))


async def settle(hv: Hypervisor, entry: VmEntry, address: str) -> AsyncGenerator[Change, None]:
    """A VM that answered becomes `ready`; one made for the warm pool is paused and becomes `pooled` instead.

    The pause is asked of the table before libvirt makes it, so libvirt's SUSPENDED event of our
    own pause is no news (`pauses.with_pause`) and no `booting, paused` VM is ever published.
    """
    if not entry.pooled:
        yield Advance(VmState.READY, address)
        return
    yield Learn(paused=True)
    await finish(lambda: hv.suspend(entry.name))
    yield Advance(VmState.POOLED, address)


def plan_for(settings: ProvisionerSettings, entry: VmEntry, template: Template, epoch: int) -> tuple[ClonePlan, bool]:
    """The clone plan of `entry` (fresh MACs and UUID) and whether its clones must prove their UUID."""
    identity = checks_identity(settings.ready_identity, template.xml)
    tag = VmTag(
        settings.fleet_id, entry.request_id, entry.created_at, settings.host, entry.address, epoch=epoch,
        identity=identity, pooled=entry.pooled, version=entry.version,
    )
    macs = random_macs(interface_count(template.xml))
    plan = plan_clone(template.xml, entry.name, macs, tag, template.sources, settings.clone_mode, uuid=random_uuid())
    return plan, identity


def checks_identity(setting: str, template_xml: str) -> bool:
    """Whether clones of this template must prove their UUID: `on`, or `auto` and the template says it can."""
    return setting == "on" or (setting == "auto" and template_identity(template_xml))


async def await_ready(tools: Tools, entry: VmEntry) -> str:
    """The VM's address once it answers (as itself, when it proves its identity), probed with backoff.

    Raises NotReady with what was last seen when `boot_timeout_s` runs out.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + tools.settings.boot_timeout_s
    delay = _FIRST_DELAY_S
    expected = entry.uuid if entry.identity else None
    while True:
        address = entry.address or await _discover(tools, entry)
        last = await tools.probe(address, expected) if address else _no_address(tools.settings, entry)
        if address and last is None:
            return address
        if loop.time() + delay > deadline:
            raise NotReady(f"not ready within {tools.settings.boot_timeout_s:g} s: {last}")
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, _MAX_DELAY_S)


async def _discover(tools: Tools, entry: VmEntry) -> str | None:
    strategy = tools.settings.address_strategy
    if strategy == "static":
        return None
    interfaces = await asyncio.to_thread(tools.hv.interface_addresses, entry.name, strategy)
    return pick_address(interfaces, entry.macs, tools.settings.backend_port)


def _no_address(settings: ProvisionerSettings, entry: VmEntry) -> str:
    macs = ", ".join(entry.macs) or "none"
    if settings.address_strategy == "static":
        return "no static address was assigned"
    where = "the guest agent"
    if settings.address_strategy == "lease":
        where = f"a DHCP lease on network '{settings.network}'"
    return f"no address from {where} for MAC(s) {macs}"
