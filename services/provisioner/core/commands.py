"""The rules a command meets before anything is done: leader epoch, room on the host, a static address, a drain.

Each rule either answers (a value) or refuses with one of `errors.py`'s classes; none builds a bus
reply or touches libvirt, so the fleet runs them in order and `service.py` puts a refusal into words
on the wire.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime

from services.provisioner.core.addresses import free_static, parse_static_pool
from services.provisioner.core.errors import CannotClone, CannotDrain, NoRoom, StaleEpoch, UnknownVm
from services.provisioner.core.machine import IN_LIBVIRT, VmEntry, can_become, transition
from services.provisioner.core.tags import template_addresses
from shared.contract.events import LIVE_STATES, VmState


def obeyed_epoch(seen: int, epoch: int) -> int:
    """The epoch to remember after obeying a command of `epoch`; StaleEpoch when a deposed leader sent it."""
    if epoch < seen:
        raise StaleEpoch(f"epoch {epoch} is older than {seen}: a newer scaler leader is in charge")
    return epoch


def check_room(entries: Iterable[VmEntry], max_vms: int, host: str) -> None:
    """NoRoom when the host already holds `max_vms` VMs (every one that may still hold a domain or a disk)."""
    held = sum(1 for entry in entries if entry.state in IN_LIBVIRT)
    if held >= max_vms:
        raise NoRoom(f"host {host} already holds {held} VM(s), its ceiling (max_vms={max_vms})")


def static_address(
    configured: tuple[str, ...], template_xml: str, template: str, port: int, entries: Iterable[VmEntry]
) -> str:
    """The next free address of the configured static list, or else of the template's metadata list."""
    try:
        pool = configured or parse_static_pool(template_addresses(template_xml), port)
    except ValueError as error:
        raise CannotClone(f"template {template} has bad static addresses: {error}") from None
    address = free_static(pool, [e.address for e in entries if e.state in IN_LIBVIRT])
    if address is None:
        raise NoRoom(f"all {len(pool)} static addresses are in use")
    return address


def draining(entry: VmEntry | None, name: str, now: datetime, deadline_s: float, reason: str) -> VmEntry | None:
    """`entry` marked `draining` with the balancers' deadline; None when it drains already (answered as it is).

    UnknownVm when no live VM has that name; CannotDrain when it is live but not serving (only `ready` drains).
    """
    if entry is None or entry.state not in LIVE_STATES:
        raise UnknownVm(f"{name} is not a live VM on this host")
    if entry.state is VmState.DRAINING:
        return None
    if not can_become(entry, VmState.DRAINING):
        raise CannotDrain(f"{name} is {entry.state.value}: only a ready VM drains (destroy it instead)")
    return replace(transition(entry, VmState.DRAINING, now, reason=reason), deadline_s=deadline_s)
