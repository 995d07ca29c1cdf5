"""A VM's life as a pure state machine: which state may follow which, and what is published.

The contract promises subscribers a fixed order (requested, cloning, booting, ready; then
destroyed, or failed at any point; a VM of the warm pool goes booting, pooled, and booting again
when a create takes it). Keeping the rule here, apart from libvirt and NATS, makes a
wrong order a refused transition rather than a confusing event.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from services.provisioner.core.tags import VmTag
from shared.contract.events import VmState, VmStateChanged
from shared.contract.provisioning import VmRecord

S = VmState
ALLOWED: dict[VmState, frozenset[VmState]] = {
    S.REQUESTED: frozenset({S.CLONING, S.FAILED, S.DESTROYED}),
    S.CLONING: frozenset({S.BOOTING, S.FAILED, S.DESTROYED}),
    S.BOOTING: frozenset({S.READY, S.POOLED, S.FAILED, S.DESTROYED}),
    S.POOLED: frozenset({S.BOOTING, S.FAILED, S.DESTROYED}),
    S.READY: frozenset({S.DRAINING, S.FAILED, S.DESTROYED}),
    S.DRAINING: frozenset({S.FAILED, S.DESTROYED}),
    S.FAILED: frozenset({S.DESTROYED}),
    S.DESTROYED: frozenset(),
}
IN_LIBVIRT = frozenset({S.REQUESTED, S.CLONING, S.BOOTING, S.READY, S.DRAINING, S.POOLED, S.FAILED})
"""States whose VM may still hold a domain or a volume, so it counts against `max_vms`."""
RUNNING = frozenset({S.BOOTING, S.READY, S.DRAINING, S.POOLED})
"""States whose VM runs in libvirt (a pooled one paused): its domain going away is news, and a pause is a fact."""


class IllegalTransition(ValueError):
    """A state change the contract's order does not allow."""


@dataclass(frozen=True)
class VmEntry:
    """What the provisioner knows about one of its VMs."""

    name: str
    state: VmState
    since: datetime
    created_at: datetime
    request_id: str | None = None
    address: str | None = None
    reason: str | None = None
    macs: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    uuid: str | None = None
    identity: bool = False
    """Readiness and the balancers check that `uuid` answers at `address` (`x-quicfleet-vm`)."""
    paused: bool = False
    """libvirt's word that the domain is paused (`pauses.py`); a fact reported, not a state of its own."""
    pooled: bool = False
    """Made for the warm pool and not taken yet: its first readiness ends in a pause and `pooled`, not `ready`."""
    deadline_s: float | None = None
    """While `draining`: how long the balancers wait for in-flight requests (from `StartDrain`, republished)."""
    version: str | None = None
    """The template version it is cloned from (in its tag; None: the template domain itself)."""

    @property
    def finished(self) -> bool:
        return self.state is S.DESTROYED


def requested(
    name: str, request_id: str | None, now: datetime, address: str | None = None, pooled: bool = False,
    version: str | None = None,
) -> VmEntry:
    """A new VM, accepted but not yet cloned (`pooled`: for the warm pool; `version`: cloned from it)."""
    return VmEntry(
        name=name, state=S.REQUESTED, since=now, created_at=now, request_id=request_id, address=address, pooled=pooled,
        version=version,
    )


def transition(
    entry: VmEntry, to: VmState, now: datetime, *, address: str | None = None, reason: str | None = None
) -> VmEntry:
    """`entry` in state `to`; raises IllegalTransition if the order forbids it."""
    if to not in ALLOWED[entry.state]:
        raise IllegalTransition(f"{entry.name}: {entry.state.value} cannot become {to.value}")
    return replace(entry, state=to, since=now, address=address or entry.address, reason=reason)


def can_become(entry: VmEntry, to: VmState) -> bool:
    return to in ALLOWED[entry.state]


def to_event(entry: VmEntry, host: str) -> VmStateChanged:
    """The `fleet.vm.<state>` event announcing `entry`'s current state."""
    return VmStateChanged(
        vm=entry.name, state=entry.state, address=entry.address, at=entry.since,
        reason=_short(entry.reason), request_id=entry.request_id, host=host,
        uuid=entry.uuid, identity=entry.identity and entry.uuid is not None, paused=entry.paused,
        deadline_s=entry.deadline_s if entry.state is S.DRAINING else None, version=entry.version,
    )


def to_record(entry: VmEntry, host: str) -> VmRecord:
    """The `VmRecord` a command reply or a list carries."""
    return VmRecord(
        vm=entry.name, state=entry.state, address=entry.address, since=entry.since,
        request_id=entry.request_id, host=host, uuid=entry.uuid, identity=entry.identity and entry.uuid is not None,
        paused=entry.paused, version=entry.version,
    )


def _short(reason: str | None) -> str | None:
    return reason if reason is None or len(reason) <= 500 else reason[:497] + "..."


def adopted(
    name: str, state: VmState, now: datetime, tag: VmTag, macs: tuple[str, ...] = (), uuid: str | None = None
) -> VmEntry:
    """An entry rebuilt from a tagged domain found in libvirt (after a restart)."""
    return VmEntry(
        name=name, state=state, since=now, created_at=tag.created_at, request_id=tag.request_id,
        address=tag.address, macs=macs, volumes=tag.volumes, uuid=uuid, identity=tag.identity, pooled=tag.pooled,
        version=tag.version,
    )
