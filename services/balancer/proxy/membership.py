"""Who the backends are: the provisioner's VM events and, at start, its fleet listing.

A VM is a candidate once it is `ready` with an address; `draining` stops new requests to it;
`destroyed` and `failed` remove it. Other states (requested, cloning, booting) change nothing.
A VM announced with `identity` must prove it sends its UUID before it becomes a candidate
(unless `balancer_identity_check` is off); the caller starts that check at once.
"""

from __future__ import annotations

from services.balancer.core.upstream import RESET
from services.balancer.proxy.router import Router
from shared.contract.events import VmState, VmStateChanged
from shared.contract.provisioning import VmList

DEFAULT_DRAIN_S = 30.0
"""Deadline of a drain started by a `fleet.vm.draining` event that carries no `deadline_s`."""


def expected(router: Router, uuid: str | None, identity: bool) -> str | None:
    """The UUID a VM must send: only when the provisioner says it does and checks are on."""
    return uuid if identity and router.options.identity_check else None


def serves(hosts: str, host: str | None) -> bool:
    """Whether a VM of provisioner `host` is this balancer's, given `balancer_hosts` (empty: every host's; a VM
    whose event names no host is nobody's once hosts are named)."""
    named = {h.strip() for h in hosts.split(",") if h.strip()}
    return not named or host in named


def apply_event(router: Router, event: VmStateChanged, now: float) -> str:
    """Apply one VM event to the router; returns what it did (for the log line)."""
    if event.state is VmState.READY:
        if event.address is None:
            return "ignored_no_address"
        router.table.ready(event.vm, event.address, now, identity=expected(router, event.uuid, event.identity))
        router.drains.cancel(event.vm)
        return "added"
    if event.state is VmState.DRAINING:
        if router.table.get(event.vm) is None:
            return "ignored_unknown"
        router.drain(event.vm, event.deadline_s or DEFAULT_DRAIN_S, event.request_id)
        return "draining"
    if event.state in (VmState.DESTROYED, VmState.FAILED):
        for attempt in router.remove(event.vm):  # a VM killed behind our back sends no RST: fail them now
            attempt.backend_lost(RESET)
        return "removed"
    return "ignored"


def apply_listing(router: Router, lists: list[VmList], now: float) -> int:
    """Add the ready VMs of fleet listings that events have not told us about; returns how many."""
    added = 0
    for listing in lists:
        for record in listing.vms:
            if record.state is VmState.READY and record.address and router.table.get(record.vm) is None:
                identity = expected(router, record.uuid, record.identity)
                router.table.ready(record.vm, record.address, now, fresh=False, identity=identity)
                added += 1
    return added
