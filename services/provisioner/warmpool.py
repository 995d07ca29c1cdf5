"""The warm pool: VMs cloned, booted, checked once and paused, so that a create resumes one instead of booting.

A fresh clone answers only after its whole boot; a paused one that is resumed answers at once
(figures in docs/services/provisioner.md, "Warm pool"). The scaler keeps the pool filled
(`CreateVm(pooled=True)`) and recycles old pooled VMs; here a plain create takes one. Going into
the pool is the end of a pool VM's boot (`boot.settle`); this module holds the pure choices (which
VM a create takes, the taken entry and tag, what a domain found after a restart is adopted as) and
the glue of a take: rewrite the tag, resume, check readiness again, `ready`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import replace
from datetime import datetime

import structlog

from services.provisioner.boot import FleetView, NotReady, await_ready, finish
from services.provisioner.core.machine import VmEntry, adopted, transition
from services.provisioner.core.ports import DomainView, Hypervisor, HypervisorError
from services.provisioner.core.tags import VmTag
from shared.contract.events import VmState

log = structlog.get_logger("provisioner.pool")
TAKE_FAILED = "taken from the warm pool but did not answer again"
"""The start of the reason a taken VM fails with (the rest says what was seen)."""


def pick(entries: Mapping[str, VmEntry], busy: Collection[str]) -> str | None:
    """The pooled VM a plain create takes: the most recently pooled one (its DHCP lease and clock the freshest).

    None when the pool is empty; `busy` VMs (being removed) are never handed out.
    """
    pooled = [e for e in entries.values() if e.state is VmState.POOLED and e.name not in busy]
    return max(pooled, key=lambda e: (e.since, e.name)).name if pooled else None


def taken(entry: VmEntry, request_id: str, now: datetime, static: bool) -> VmEntry:
    """The pooled `entry` as create `request_id` took it: `booting`, out of the pool, the request id its own.

    It is marked unpaused before the resume, so libvirt's RESUMED event of it is no news; its address is
    found again (a lease may have changed while it slept) unless it is a static one, which it keeps.
    """
    booting = transition(entry, VmState.BOOTING, now)
    address = entry.address if static else None
    return replace(booting, request_id=request_id, pooled=False, paused=False, address=address)


def retagged(tag: VmTag, request_id: str | None, epoch: int) -> VmTag:
    """The tag of a taken VM: the take's request id and epoch, no longer of the pool (so it never goes back)."""
    return replace(tag, request_id=request_id, epoch=max(tag.epoch, epoch), pooled=False)


def adopt_as(view: DomainView) -> VmState:
    """What a running domain of ours found after a restart is adopted as.

    `pooled` when its tag says pool and libvirt says paused. Anything else is adopted `booting` and
    probed: a pool VM found running was stopped before it was paused (it goes back into the pool once
    it answers), and a VM whose tag no longer says pool was taken (it becomes `ready`).
    """
    return VmState.POOLED if view.tag is not None and view.tag.pooled and view.paused else VmState.BOOTING


def adopted_entry(view: DomainView, now: datetime) -> VmEntry:
    """The entry of a found domain; a pooled one counts its time in the pool from its creation (the
    pause time is not in the tag), so the scaler's `pool_max_age_s` recycles it early rather than late."""
    assert view.tag is not None
    state = adopt_as(view)
    if state is VmState.POOLED:
        return replace(adopted(view.name, state, view.tag.created_at, view.tag, view.macs, view.uuid), paused=True)
    return adopted(view.name, state, now, view.tag, view.macs, view.uuid)


async def take(fleet: FleetView, name: str) -> None:
    """Finish a take: tag first (a restart then adopts the VM as taken), resume, readiness again, `ready`,
    then the guest's clock set again (it stood still while the VM was paused).

    A failure, or no answer as itself within `boot_timeout_s`, fails and removes the VM like a clone
    that never booted: the create was answered already, and the scaler replaces failed VMs.
    """
    request_id = fleet.entries[name].request_id
    try:
        await finish(lambda: _retag(fleet.hv, name, request_id, fleet.epoch))
        await finish(lambda: fleet.hv.resume(name))
        address = await await_ready(fleet, name)
    except (HypervisorError, NotReady) as error:
        log.warning("pool.take_failed", vm=name, request_id=request_id, error=str(error))
        await fleet.remove(name, reason=f"{TAKE_FAILED}: {error}")
        return
    await fleet.advance(name, VmState.READY, address=address)
    await _set_clock(fleet, name)


async def _set_clock(fleet: FleetView, name: str) -> None:
    """Best effort, after `ready` so a slow or absent guest agent never delays it: a paused guest's clock is
    behind by its time in the pool (measured: exactly), which a guest's NTP would take hours to slew away."""
    try:
        await finish(lambda: fleet.hv.set_clock(name))
    except HypervisorError as error:
        log.info("pool.clock_not_set", vm=name, error=str(error))


def _retag(hv: Hypervisor, name: str, request_id: str | None, epoch: int) -> None:
    """Read the tag from libvirt and write it back taken, so nothing libvirt holds in it is lost."""
    view = hv.domain(name)
    if view is None or view.tag is None:
        raise HypervisorError(f"domain {name} or its tag is gone")
    hv.set_tag(name, retagged(view.tag, request_id, epoch))
