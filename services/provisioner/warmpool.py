"""The glue of a take from the warm pool: rewrite the tag, resume, check readiness again, `ready`, set the clock.

The rules (which VM a create takes, the taken entry and tag, what a found domain is adopted as)
are pure and live in `core/warmpool.py`; going into the pool is the end of a pool VM's boot
(`boot.settle`). Like a boot, a take holds no table: it yields the changes it wants.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

import structlog

from services.provisioner.boot import NotReady, Tools, await_ready, finish
from services.provisioner.core.changes import Advance, Change, Fail
from services.provisioner.core.machine import VmEntry
from services.provisioner.core.ports import Hypervisor, HypervisorError
from services.provisioner.core.warmpool import TAKE_FAILED, retagged
from shared.contract.events import VmState

log = structlog.get_logger("provisioner.pool")


async def take(tools: Tools, entry: VmEntry, epoch: int) -> AsyncGenerator[Change, None]:
    """Finish the take of `entry` (as `core.warmpool.taken` marked it): tag first (a restart then adopts the VM
    as taken), resume, readiness again, `ready`, then the guest's clock set again (it stood still while paused).

    A failure, or no answer as itself within `boot_timeout_s`, fails and removes the VM like a clone
    that never booted: the create was answered already, and the scaler replaces failed VMs.
    """
    name, request_id = entry.name, entry.request_id
    try:
        await finish(lambda: _retag(tools.hv, name, request_id, epoch))
        await finish(lambda: tools.hv.resume(name))
        address = await await_ready(tools, entry)
    except (HypervisorError, NotReady) as error:
        log.warning("pool.take_failed", vm=name, request_id=request_id, error=str(error))
        yield Fail(f"{TAKE_FAILED}: {error}")
        return
    yield Advance(VmState.READY, address)
    await _set_clock(tools.hv, name)


async def _set_clock(hv: Hypervisor, name: str) -> None:
    """Best effort, after `ready` so a slow or absent guest agent never delays it: a paused guest's clock is
    behind by its time in the pool (measured: exactly), which a guest's NTP would take hours to slew away."""
    try:
        await finish(lambda: hv.set_clock(name))
    except HypervisorError as error:
        log.info("pool.clock_not_set", vm=name, error=str(error))


def _retag(hv: Hypervisor, name: str, request_id: str | None, epoch: int) -> None:
    """Read the tag from libvirt and write it back taken, so nothing libvirt holds in it is lost."""
    view = hv.domain(name)
    if view is None or view.tag is None:
        raise HypervisorError(f"domain {name} or its tag is gone")
    hv.set_tag(name, retagged(view.tag, request_id, epoch))
