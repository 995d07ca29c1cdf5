"""Reconcile: compare what libvirt holds with what the provisioner believes, and decide.

libvirt is the source of truth. A provisioner that crashed between define and start leaves a
defined, never-started domain; one that restarted has forgotten running VMs; someone may have
removed a domain by hand. These pure functions turn one listing into actions; the glue runs them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from services.provisioner.core.clone import owned_volume_vm
from services.provisioner.core.machine import RUNNING, VmEntry
from services.provisioner.core.ports import DomainView, VolumeView

HALF_MADE = (
    "found defined but not running (a clone interrupted before it started, or a VM stopped "
    "outside quicfleet); removed"
)
LEFTOVER = "still in libvirt after it failed or was destroyed; removed again"
VANISHED = "its domain disappeared from libvirt (removed outside quicfleet)"
ORPHAN_DISK = "a disk of this fleet and host without its domain (a clone or teardown was interrupted); deleted"


@dataclass(frozen=True)
class Adopt:
    """A running tagged domain we have no entry for: take it back (`warmpool.adopt_as` says as what)."""

    view: DomainView


@dataclass(frozen=True)
class Remove:
    """A tagged domain that cannot become ready: report it failed and tear it down."""

    view: DomainView
    reason: str


@dataclass(frozen=True)
class Forget:
    """An entry whose domain is gone: report it failed, then destroyed."""

    name: str
    reason: str


@dataclass(frozen=True)
class RemoveVolume:
    """A disk of ours whose domain is gone: delete it."""

    volume: VolumeView
    reason: str


@dataclass(frozen=True)
class Disks:
    """The volumes of the pools clones are made in, and the template's own disks (never touched)."""

    pools: frozenset[str]
    volumes: tuple[VolumeView, ...]
    protected: frozenset[str]


Action = Adopt | Remove | Forget | RemoveVolume


def is_ours(view: DomainView, fleet: str, host: str) -> bool:
    """Only domains tagged with our fleet id and host are ever touched."""
    return view.tag is not None and view.tag.fleet == fleet and (view.tag.host in (None, host))


def plan_reconcile(
    views: Iterable[DomainView], entries: Mapping[str, VmEntry], busy: Iterable[str], fleet: str, host: str
) -> list[Action]:
    """Actions that bring our view in line with libvirt's; `busy` VMs (a task works on them) are left alone."""
    skip = set(busy)
    mine = {view.name: view for view in views if is_ours(view, fleet, host)}
    actions: list[Action] = []
    for name, view in sorted(mine.items()):
        if name in skip:
            continue
        entry = entries.get(name)
        if not view.active:
            actions.append(Remove(view, HALF_MADE))
        elif entry is None:
            actions.append(Adopt(view))
        elif entry.state not in RUNNING:
            actions.append(Remove(view, LEFTOVER))
    for name, entry in sorted(entries.items()):
        if name not in mine and name not in skip and entry.state in RUNNING:
            actions.append(Forget(name, VANISHED))
    return actions


def plan_volumes(
    disks: Disks, views: Iterable[DomainView], busy: Iterable[str], prefix: str, fleet: str, host: str
) -> list[RemoveVolume]:
    """Deletes for disks provably ours (clone pool, our exact name) whose domain neither exists nor is busy.

    Any domain of that name counts, ours or not, and so does any tag that lists the disk: when in
    doubt a disk is kept, since a leaked disk costs space and a wrong delete costs a VM.
    """
    views = list(views)
    domains = {view.name for view in views} | set(busy)
    referenced = {path for view in views if view.tag is not None for path in view.tag.volumes}
    actions = []
    for volume in sorted(disks.volumes, key=lambda v: v.path):
        vm = owned_volume_vm(volume.name, prefix, fleet, host)
        if vm is None or vm in domains or volume.pool not in disks.pools:
            continue
        if volume.path not in disks.protected and volume.path not in referenced:
            actions.append(RemoveVolume(volume, ORPHAN_DISK))
    return actions
