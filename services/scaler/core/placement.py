"""Where each create goes: the host with the most room for one more VM of the template.

Every provisioner's list says its `max_vms` and, when libvirt could tell, what the host has: free
memory and CPUs, and the memory and vCPUs one VM of its template is given (`HostCapacity`). Among
the live hosts (answered the last list, not lost), a create goes to the one with the most places:

1. places: the fewer of its room under `max_vms` (less every VM of ours there and every create
   placed there) and the template-sized VMs its free memory still holds. Free memory is as the
   last list measured it, so each VM of ours there that was not running then (and each create
   placed there) takes one VM's memory from it. A host that says nothing of its memory has its
   room under `max_vms` alone (the rule before hosts reported any of this);
2. then the least CPU overcommit with one more VM there (vCPUs of our VMs per host CPU; a host
   that does not say ranks after those that do);
3. then the fewest VMs, then the name, so that the choice is the same on every replica (a host
   that reports no figures is ranked by places and name alone, as before).

Before all of these, a host with a spare pooled VM (one no pending create is taking yet) comes
first: its provisioner resumes that VM (seconds) instead of booting one (tens of seconds). Such a
take needs no place: the pooled VM already holds its room under `max_vms` and its memory (a
paused domain keeps it), so a host full with its pool still takes a create that resumes one.

A host with no place gets no create; when no host has one, nothing is sent (a refusal would count
as a failure and slow every later create) and the note says why, per host, in words. Pure.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace

from services.scaler.core.liveness import lost_hosts
from services.scaler.core.model import FleetState, HostCapacity
from shared.contract.events import VmState

ALL_FULL = "every host is at its max_vms"


@dataclass(frozen=True)
class Room:
    """One host as placement counts it: its ceiling, what it holds, what it said it has."""

    host: str
    max_vms: int
    vms: int
    """VMs of ours there (whatever their state: each holds its domain) and creates placed there still pending."""
    unstarted: int
    """Of those, the ones its last list did not show running: their memory is still in its free figure."""
    capacity: HostCapacity | None = None
    spare: int = 0
    """Its pooled VMs that no pending create is taking: a create here resumes one of them."""

    @property
    def fits(self) -> int | None:
        """More template-sized VMs its free memory holds (None: it does not say)."""
        capacity = self.capacity
        if capacity is None or capacity.free_memory_mib is None or capacity.vm_memory_mib is None:
            return None
        return max(0, capacity.free_memory_mib // capacity.vm_memory_mib - self.unstarted)

    @property
    def places(self) -> int:
        """How many more creates it may take: under `max_vms`, and in its memory when it says."""
        under_max = max(0, self.max_vms - self.vms)
        fits = self.fits
        return under_max if fits is None else min(under_max, fits)

    @property
    def overcommit(self) -> float:
        """vCPUs of our VMs per host CPU with one more VM there (infinite: it does not say)."""
        capacity = self.capacity
        if capacity is None or capacity.cpus is None or capacity.vm_vcpus is None:
            return math.inf
        return (self.vms + 1) * capacity.vm_vcpus / capacity.cpus

    @property
    def takes(self) -> bool:
        """Whether it takes one more create: it has a spare pooled VM to resume, or a place."""
        return self.spare > 0 or self.places > 0

    def rank(self) -> tuple[bool, int, float, int, str]:
        """Best first: a spare pooled VM, most places, least overcommit, fewest VMs, then the name.

        A host that reports no figures at all skips the VM count: it is ranked as every host was
        before hosts reported any, by places and then name.
        """
        return not self.spare, -self.places, self.overcommit, self.vms if self.capacity is not None else 0, self.host

    def took_one(self) -> Room:
        """The room after one more create is placed here: a spare pooled VM taken, or else one more VM."""
        if self.spare:
            return replace(self, spare=self.spare - 1)
        return replace(self, vms=self.vms + 1, unstarted=self.unstarted + 1)

    def why_full(self) -> str:
        """Why it takes no create, in words ("h1 has 1.2 GiB free < 5 VMs of 256 MiB (4 not running yet)")."""
        if self.vms >= self.max_vms or self.capacity is None or self.fits is None:
            return f"{self.host} at its max_vms ({self.max_vms})"
        free, size = mib(self.capacity.free_memory_mib or 0), mib(self.capacity.vm_memory_mib or 0)
        if not self.unstarted:
            return f"{self.host} has {free} free < one VM of {size}"
        return f"{self.host} has {free} free < {self.unstarted + 1} VMs of {size} ({self.unstarted} not running yet)"


def mib(value: int) -> str:
    """A memory figure as a person reads it: MiB below a GiB, GiB with one decimal above."""
    return f"{value} MiB" if value < 1024 else f"{value / 1024:.1f} GiB"


def rooms(state: FleetState) -> dict[str, Room]:
    """Every live host's room: answered the last list with its `max_vms`, and not lost.

    Every VM we know of on a host counts against its `max_vms` (a draining, failed or pooled one
    still holds its domain), so a create never goes where the provisioner would refuse it: a
    refusal counts as a failure and slows every later create, while another host may have room.
    A pending create takes a place there, unless it takes one of the host's pooled VMs: each
    pending capacity create there is counted as taking one while it has some (its provisioner
    resumes one first), and pooled VMs being destroyed are not there to take.
    """
    lost = lost_hosts(state)
    hosts = {host: most for host, most in state.hosts.items() if host not in lost}
    held, unstarted, pooled = Counter[str](), Counter[str](), Counter[str]()
    for vm in state.vms.values():
        if vm.host in hosts:
            held[vm.host] += 1
            capacity = state.capacity.get(vm.host)
            unstarted[vm.host] += capacity is None or vm.name not in capacity.running
            pooled[vm.host] += vm.state is VmState.POOLED and vm.name not in state.drains
    creating = Counter(host for request_id, host in state.placed.items() if request_id in state.pending)
    filling = Counter(host for request_id, host in state.placed.items() if request_id in state.pool_pending)
    room: dict[str, Room] = {}
    for host, most in hosts.items():
        taking = min(creating[host], pooled[host])
        new = creating[host] - taking + filling[host]
        room[host] = Room(host, most, held[host] + new, unstarted[host] + new, state.capacity.get(host),
                          pooled[host] - taking)
    return room


def place(state: FleetState, count: int) -> tuple[list[str | None], str]:
    """The host for each of up to `count` creates, and why fewer when fewer ("" when every one is placed).

    With no host known (no list yet, or a host that does not say its `max_vms`: an older
    provisioner) every create goes to any provisioner (host None), as before placement.
    """
    if not state.hosts:
        return [None] * count, ""
    room = rooms(state)
    chosen: list[str | None] = []
    for _ in range(count):
        best = min(room.values(), key=Room.rank, default=None)
        if best is None or not best.takes:
            return chosen, no_room(room.values())
        chosen.append(best.host)
        room[best.host] = best.took_one()
    return chosen, ""


def no_room(full: Iterable[Room]) -> str:
    """The note when no host takes a create: each one's reason, or the short form when all are at `max_vms`."""
    hosts = sorted(full, key=lambda room: room.host)
    if not hosts:
        return "no live host to place on"
    if all(room.vms >= room.max_vms for room in hosts):
        return ALL_FULL
    return "no host has room: " + ", ".join(room.why_full() for room in hosts)
