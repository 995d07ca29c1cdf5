"""Pure reducers: fold provisioner events, VM lists, balancer reports and load into `FleetState`.

Every replica runs these (followers too, so their status answers are current); only the
leader acts on the result. A VM's warm-up is measured from the local time its `ready`
event arrived, so clock skew between hosts cannot make a booting VM look warm.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from services.scaler.core.boottimes import note
from services.scaler.core.model import (
    GONE_KEPT,
    AutoscaleMemory,
    BalancerView,
    Failures,
    FleetState,
    HostCapacity,
    LoadView,
    VmLoadView,
    VmView,
    pool_request,
)
from shared.contract.draining import BackendDrained
from shared.contract.events import VmState, VmStateChanged
from shared.contract.load import BalancerReported, FleetLoaded
from shared.contract.provisioning import VmList, VmRecord

RUNNING = frozenset({VmState.BOOTING, VmState.READY, VmState.DRAINING, VmState.POOLED})
"""Listed states of a VM whose domain has been started: its memory is no longer free on its host (a pooled
VM is paused, and a paused domain keeps its memory)."""


def seconds(at: datetime) -> float:
    """A contract timestamp as float seconds since the epoch."""
    return at.timestamp()


@dataclass(frozen=True)
class Known:
    """What an event or record says about a VM besides its state (None: not said)."""

    host: str | None = None
    address: str | None = None
    request_id: str | None = None
    paused: bool | None = None

    def onto(self, vm: VmView) -> VmView:
        """The VM with every field this report knows filled in."""
        return replace(
            vm, host=self.host or vm.host, address=self.address or vm.address,
            request_id=self.request_id or vm.request_id, paused=vm.paused if self.paused is None else self.paused,
        )


def upsert(state: FleetState, name: str, vm_state: VmState, at: float, now: float, known: Known) -> FleetState:
    """Record that `name` is in `vm_state`; readiness resets the failure backoff, failure grows it.

    Destroyed and failed are final: news about a destroyed VM (a late event, a list or reply
    from before it went) only settles its create, and a failed VM stays failed until destroyed.
    """
    old = state.vms.get(name)
    if name in state.gone or (old is not None and old.state is VmState.FAILED and vm_state is not VmState.FAILED):
        return _settle(state, known.request_id)
    if old is None:
        vm = known.onto(VmView(name=name, state=vm_state, since=at, created=min(at, now)))
    else:
        vm = known.onto(old if old.state is vm_state else replace(old, state=vm_state, since=at))
    if vm_state is VmState.READY and (old is None or old.state is not VmState.READY):
        vm = replace(vm, ready_at=now)
    vm = replace(vm, seen=now)
    vms = dict(state.vms) | {name: vm}
    state = replace(state, vms=vms, failures=_failures(state, old, vm_state, now))
    if old is None or old.state is not vm_state:  # time boots and resumes, for the boot lead (`boottimes`)
        state = replace(state, boots=note(state.boots, name, vm.host, old.state if old else None, vm_state, now))
    return _settle(state, vm.request_id)


def _settle(state: FleetState, request_id: str | None) -> FleetState:
    """The create (capacity or pool) with this request id has an answer: it no longer counts as pending."""
    if request_id is None or (request_id not in state.pending and request_id not in state.pool_pending):
        return state
    return replace(
        state, pending={k: t for k, t in state.pending.items() if k != request_id},
        pool_pending={k: t for k, t in state.pool_pending.items() if k != request_id},
        placed={k: h for k, h in state.placed.items() if k != request_id},
    )


def _failures(state: FleetState, old: VmView | None, vm_state: VmState, now: float) -> Failures:
    """A VM becoming ready (or pooled: booted and checked) clears the streak; one newly failed adds to it."""
    if vm_state in (VmState.READY, VmState.POOLED):
        return Failures()
    if vm_state is VmState.FAILED and (old is None or old.state is not VmState.FAILED):
        return Failures(count=state.failures.count + 1, last_at=now)
    return state.failures


def forget(state: FleetState, name: str, now: float = 0.0) -> FleetState:
    """The VM is destroyed: drop it and its drain, and remember the name so nothing brings it back."""
    vms = {k: v for k, v in state.vms.items() if k != name}
    drains = {k: v for k, v in state.drains.items() if k != name}
    gone = {k: t for k, t in state.gone.items() if k != name} | {name: now}
    if len(gone) > GONE_KEPT:
        gone = dict(list(gone.items())[-GONE_KEPT:])
    return replace(state, vms=vms, drains=drains, gone=gone)


def on_vm_event(state: FleetState, event: VmStateChanged, now: float) -> FleetState:
    """A `fleet.vm.<state>` event."""
    if event.state is VmState.DESTROYED:
        return _settle(forget(state, event.vm, now), event.request_id)
    return upsert(
        state, event.vm, event.state, seconds(event.at), now,
        Known(event.host, event.address, event.request_id, event.paused),
    )


def on_record(state: FleetState, record: VmRecord, now: float) -> FleetState:
    """One VM from a create/destroy reply or a list."""
    if record.state is VmState.DESTROYED:
        return forget(state, record.vm, now)
    return upsert(
        state, record.vm, record.state, seconds(record.since), now,
        Known(record.host, record.address, record.request_id, record.paused),
    )


def _drop(state: FleetState, name: str) -> FleetState:
    """A host no longer lists the VM: out of the view (not final: only a destroy is)."""
    vms = {k: v for k, v in state.vms.items() if k != name}
    return replace(state, vms=vms, drains={k: v for k, v in state.drains.items() if k != name})


def on_lists(
    state: FleetState, lists: Iterable[tuple[str, list[VmRecord]]], asked: float, now: float
) -> FleetState:
    """Every answering host's VMs: add or update them, forget that host's VMs it no longer has.

    A list is a snapshot from when it was `asked`; news about a VM that arrived since then is
    newer, so those VMs are left as they are.
    """
    for host, records in lists:
        listed = {r.vm for r in records}
        for vm in [v for v in state.vms.values() if v.host == host and v.name not in listed and v.seen < asked]:
            state = _drop(state, vm.name)
        for record in records:
            known = state.vms.get(record.vm)
            if known is None or known.seen < asked:
                state = on_record(state, record if record.host else record.model_copy(update={"host": host}), now)
    return state


def on_hosts(state: FleetState, hosts: Mapping[str, int | None]) -> FleetState:
    """The provisioners that answered a list and their `max_vms`: where creates may go from now on.

    A host that did not answer is left out until it answers again, so no create waits on a
    provisioner that is gone. When any host does not say its `max_vms` (an older provisioner),
    none is placed on: creates go to any provisioner, as before, rather than never to that one.
    """
    known = {host: most for host, most in hosts.items() if most is not None}
    return replace(state, hosts=known if len(known) == len(hosts) else {})


def on_capacity(state: FleetState, lists: Iterable[VmList]) -> FleetState:
    """What each answering host says it has, and which of its VMs were running when it said so.

    Like `on_hosts`, a host that did not answer is left out until it does; one that says nothing
    about its room (an older provisioner, or libvirt could not tell) has no entry, and placement
    counts only its VMs.
    """
    found = {listed.host: capacity_of(listed) for listed in lists}
    return replace(state, capacity={host: room for host, room in found.items() if room is not None})


def capacity_of(listed: VmList) -> HostCapacity | None:
    """The room one list reports (None when it reports none)."""
    figures = (listed.free_memory_mib, listed.cpus, listed.vm_memory_mib, listed.vm_vcpus)
    if all(figure is None for figure in figures):
        return None
    return HostCapacity(
        free_memory_mib=listed.free_memory_mib, cpus=listed.cpus, vm_memory_mib=listed.vm_memory_mib,
        vm_vcpus=listed.vm_vcpus, running=frozenset(r.vm for r in listed.vms if r.state in RUNNING),
    )


def on_heard(state: FleetState, hosts: Iterable[str], now: float) -> FleetState:
    """These provisioners answered a list just now (`liveness.lost_hosts` compares them)."""
    return replace(state, host_seen=dict(state.host_seen) | dict.fromkeys(hosts, now))


def on_created(state: FleetState, request_id: str, record: VmRecord | None, now: float) -> FleetState:
    """A create reply: the pending create is settled; its record only fills in a VM not heard of yet.

    The provisioner may publish `booting` or `ready` before its reply reaches us, so the
    reply's (older) state must not set the VM back. A reply that takes a pooled VM (this
    create's request id) is the exception: until the VM's own `booting` event it would be
    neither the pool's nor capacity, and the next evaluation would create again.
    """
    state = _settle(state, request_id)
    if record is None:
        return state
    known = state.vms.get(record.vm)
    if known is not None and not (known.state is VmState.POOLED and known.request_id != record.request_id):
        return state
    return on_record(state, taken(record, now), now)


def taken(record: VmRecord, now: float) -> VmRecord:
    """A take's reply as the resume it starts: a record still saying `pooled` under a plain create's id is `booting`."""
    if record.state is not VmState.POOLED or pool_request(record.request_id):
        return record
    return record.model_copy(update={"state": VmState.BOOTING, "since": datetime.fromtimestamp(now, UTC)})


def new_term(state: FleetState, epoch: int, leader: str, memory: AutoscaleMemory) -> FleetState:
    """This replica starts leading: a new epoch and a seeded autoscaler memory.

    Creates still in flight (a lapsed and renewed lease re-elects the same replica) stay
    pending until their reply or timeout settles them: dropping them made the next evaluation
    create the same VM again. Drains in flight go on; a deposed leader's show up as orphans.
    """
    return replace(state, epoch=epoch, leader=leader, memory=memory)


def on_create_failed(state: FleetState, request_id: str, now: float, counted: bool = True) -> FleetState:
    """A create was refused or went unanswered: count it as a failure for the backoff.

    `counted=False` (no provisioner listened, so none can have acted) only forgets the create.
    """
    state = _settle(state, request_id)
    if not counted:
        return state
    return replace(state, failures=Failures(count=state.failures.count + 1, last_at=now))


def on_report(state: FleetState, report: BalancerReported, now: float) -> FleetState:
    """A balancer's per-second report: it is alive, and this is what it has in flight per VM.

    In flight is requests, plus open flows from a balancer in `l4` mode (it sees no requests):
    a scale-in then drains the VM with the fewest connections, whose drain ends soonest.
    """
    view = BalancerView(
        id=report.balancer, last_seen=now, interval_s=report.interval_s, address=report.address,
        outstanding={b.vm: b.outstanding + b.flows for b in report.backends},
        unroutable=frozenset(b.vm for b in report.backends if not b.routable and not b.draining),
    )
    alive = {k: b for k, b in state.balancers.items() if b.live(now)}
    return replace(state, balancers=alive | {report.balancer: view})


def on_drained(state: FleetState, event: BackendDrained) -> FleetState:
    """One balancer has nothing in flight to a draining VM."""
    drain = state.drains.get(event.vm)
    if drain is None:
        return state
    drains = dict(state.drains) | {event.vm: replace(drain, waiting=drain.waiting - {event.balancer})}
    return replace(state, drains=drains)


@dataclass(frozen=True)
class LoadSource:
    """The metrics replica whose `fleet.load` series the scaler follows, when it was last heard, and
    the time between its last two snapshots (its interval)."""

    name: str | None = None
    heard_at: float = -math.inf
    interval: float = 0.0


def follow(current: LoadSource, source: str | None, now: float, patience_s: float) -> LoadSource | None:
    """The followed replica after a snapshot from `source`, or None when the snapshot is to be ignored.

    Several metrics replicas each publish every interval. Their snapshots agree, but taken
    together they would put two points per interval into the demand history, a fraction of an
    interval apart: the history's jumps would shrink to half noise, half nothing, and the step
    detector would read ordinary noise as bursts. So one replica's series is followed, and
    another is taken up only when that one has been silent for `patience_s`, or for one and a
    half of its own intervals when they are longer (a slow interval is not silence).
    """
    if source == current.name:
        gap = now - current.heard_at
        return LoadSource(source, now, gap if math.isfinite(gap) else 0.0)
    if now - current.heard_at > max(patience_s, 1.5 * current.interval):
        return LoadSource(source, now)
    return None


def news_at(snapshot: FleetLoaded, before: FleetLoaded | None, before_at: float, now: float) -> float:
    """When the load in `snapshot` was news: `now`, or `before_at` when no balancer report came in since `before`.

    Metrics may snapshot more often than balancers report, or repeat itself while reports are
    late; such a snapshot repeats old figures. Stamped with the time of the news it repeats, it
    adds no point to the demand history (zero jumps there would make every real change look like
    a step out of the noise), and a long silence reads as stale data, on which the scaler holds.
    A snapshot without a report count (0) is always news.
    """
    same = before is not None and (snapshot.source, snapshot.reports) == (before.source, before.reports)
    return before_at if same and snapshot.reports else now


def load_view(snapshot: FleetLoaded, now: float) -> LoadView:
    """A `fleet.load` snapshot, stamped with the local time its news arrived (staleness uses our clock)."""
    vms = {v.vm: VmLoadView(rps=v.rps, outstanding=v.outstanding, p95_s=v.p95_s, flows=v.flows) for v in snapshot.vms}
    return LoadView(at=now, rps=snapshot.rps, outstanding=snapshot.outstanding, p95_s=snapshot.p95_s, vms=vms,
                    window_s=snapshot.window_s, flows=snapshot.flows)
