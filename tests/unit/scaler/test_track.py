"""Reducers that fold events into the scaler's view, and the pure command edits and status."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.scaler.core import edits
from services.scaler.core.model import HostCapacity
from services.scaler.core.track import (
    LoadSource,
    follow,
    news_at,
    on_capacity,
    on_hosts,
    on_lists,
    on_report,
    on_vm_event,
)
from services.scaler.lease import LeaseRecord, Seen, expired
from shared.contract.base import ErrorCode
from shared.contract.commands import DrainVm, PolicyPatch, ScaleFleet
from shared.contract.events import VmState, VmStateChanged
from shared.contract.load import BackendLoad, BalancerReported, FleetLoaded
from shared.contract.provisioning import VmList, VmRecord
from shared.contract.status import DesiredState
from shared.errors import BusError
from tests.unit.scaler.fleets import NOW, fleet

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_ready_event_starts_warm_up_on_the_local_clock_and_clears_failures() -> None:
    """`ready` stamps ready_at with our time (not the event's), and resets the failure streak."""
    state = on_vm_event(fleet(0), VmStateChanged(vm="a", state=VmState.FAILED, host="h1"), NOW)
    assert state.failures.count == 1
    state = on_vm_event(state, VmStateChanged(vm="a", state=VmState.FAILED, host="h1"), NOW + 1)
    assert state.failures.count == 1
    state = on_vm_event(state, VmStateChanged(vm="b", state=VmState.READY, at=T0, host="h1"), NOW + 2)
    assert state.vms["b"].ready_at == NOW + 2 and state.failures.count == 0


def test_event_with_request_id_settles_the_pending_create() -> None:
    """The first event naming a pending create's request id replaces the pending entry with the VM."""
    state = fleet(0, pending={"r1": NOW})
    state = on_vm_event(state, VmStateChanged(vm="a", state=VmState.REQUESTED, request_id="r1"), NOW)
    assert state.pending == {} and "a" in state.vms


def test_destroyed_event_forgets_the_vm() -> None:
    """A `destroyed` event removes the VM from the view."""
    state = on_vm_event(fleet(2), VmStateChanged(vm="vm0", state=VmState.DESTROYED), NOW)
    assert sorted(state.vms) == ["vm1"]


def test_list_replaces_one_hosts_vms_and_keeps_other_hosts() -> None:
    """A host's list adds its VMs and drops the ones it no longer has; other hosts are untouched."""
    state = fleet(2)
    record = VmRecord(vm="new", state=VmState.READY, since=T0)
    state = on_lists(state, [("h1", [record])], NOW, NOW)
    assert sorted(state.vms) == ["new"] and state.vms["new"].host == "h1"
    state = on_lists(state, [("h2", [])], NOW, NOW)
    assert sorted(state.vms) == ["new"]


def test_list_asked_before_newer_events_does_not_undo_them() -> None:
    """A VM that an event reported after the list was asked for is neither forgotten nor set back."""
    state = on_vm_event(fleet(0), VmStateChanged(vm="a", state=VmState.READY, host="h1"), NOW + 1)
    stale = VmRecord(vm="a", state=VmState.BOOTING, since=T0, host="h1")
    assert on_lists(state, [("h1", [])], NOW, NOW + 2).vms["a"].state is VmState.READY
    assert on_lists(state, [("h1", [stale])], NOW, NOW + 2).vms["a"].state is VmState.READY


def test_a_pause_is_taken_from_events_and_lists_and_a_resume_clears_it() -> None:
    """`paused` on a republished event or a listed record sets the VM's flag; the next one without it clears it."""
    ready = VmStateChanged(vm="a", state=VmState.READY, at=T0, host="h1")
    state = on_vm_event(fleet(0), ready.model_copy(update={"paused": True}), NOW)
    assert state.vms["a"].paused and state.vms["a"].since == T0.timestamp()
    assert not on_vm_event(state, ready, NOW + 1).vms["a"].paused
    listed = VmRecord(vm="a", state=VmState.READY, since=T0, host="h1", paused=False)
    assert not on_lists(state, [("h1", [listed])], NOW + 1, NOW + 2).vms["a"].paused
    paused = on_lists(fleet(0), [("h1", [listed.model_copy(update={"paused": True})])], NOW, NOW)
    assert paused.vms["a"].paused


def test_silent_balancer_drops_out_after_three_intervals() -> None:
    """A balancer is live while it reports; after ~3 silent intervals it is left out of status."""
    report = BalancerReported(balancer="b1", started_at=T0, backends=[BackendLoad(vm="vm0", outstanding=3)])
    state = on_report(fleet(1), report, NOW)
    assert [b.id for b in edits.status(DesiredState(), state, None, 0, None, NOW + 2).balancers] == ["b1"]
    status = edits.status(DesiredState(), state, None, 0, None, NOW + 4)
    assert status.balancers == [] and status.vms[0].outstanding == 0.0


def test_scale_edit_checks_bounds_and_sets_a_hold() -> None:
    """A scale inside the bounds sets the size and the hold; outside is `invalid`."""
    state = edits.scale(DesiredState(), ScaleFleet(replicas=3), NOW)
    assert state.desired == 3 and state.hold_until is not None
    assert state.hold_until.timestamp() == pytest.approx(NOW + state.policy.manual_hold_s)
    with pytest.raises(BusError) as caught:
        edits.scale(DesiredState(), ScaleFleet(replicas=11), NOW)
    assert caught.value.code is ErrorCode.INVALID


def test_policy_edit_refuses_inconsistent_bounds_and_clamps_the_size() -> None:
    """min above max is `invalid`; a new max below the size pulls the size down."""
    with pytest.raises(BusError) as caught:
        edits.set_policy(DesiredState(), PolicyPatch(min_replicas=5, max_replicas=2))
    assert caught.value.code is ErrorCode.INVALID and "min_replicas" in caught.value.message
    state = edits.set_policy(DesiredState(desired=8), PolicyPatch(max_replicas=4))
    assert state.desired == 4 and state.policy.max_replicas == 4


def test_drain_edit_needs_a_known_vm_and_counts_once() -> None:
    """Draining an unknown VM is `not_found`; a known one shrinks the size once, however often asked."""
    with pytest.raises(BusError) as caught:
        edits.drain(DesiredState(desired=3), DrainVm(vm="ghost"), fleet(3), NOW)
    assert caught.value.code is ErrorCode.NOT_FOUND
    once = edits.drain(DesiredState(desired=3), DrainVm(vm="vm1"), fleet(3), NOW)
    twice = edits.drain(once, DrainVm(vm="vm1"), fleet(3), NOW)
    assert once.desired == twice.desired == 2 and twice.draining == ["vm1"]


def test_lease_expires_only_after_ttl_on_an_unchanged_revision() -> None:
    """A follower takes over after the same revision sat for ttl seconds; a renewal restarts the clock."""
    seen = Seen(revision=7, record=LeaseRecord(holder="a", epoch=1, renewed_at=T0), at=100.0)
    assert not expired(seen, 7, 6.0, 105.9)
    assert expired(seen, 7, 6.0, 106.0)
    assert not expired(seen, 8, 6.0, 200.0)
    assert not expired(None, 7, 6.0, 200.0)


def test_load_follows_one_metrics_replica_until_it_falls_silent() -> None:
    """A second metrics replica is ignored while the followed one speaks, and taken up after `patience_s` of silence."""
    first = follow(LoadSource(), "m-a", NOW, patience_s=2.5)
    assert first == LoadSource("m-a", NOW)
    assert follow(first, "m-b", NOW + 0.4, patience_s=2.5) is None
    again = follow(first, "m-a", NOW + 1, patience_s=2.5)
    assert again == LoadSource("m-a", NOW + 1, interval=1.0)
    assert follow(again, "m-b", NOW + 3.4, patience_s=2.5) is None
    assert follow(again, "m-b", NOW + 3.6, patience_s=2.5) == LoadSource("m-b", NOW + 3.6)


def test_a_slow_replica_is_not_taken_for_a_silent_one() -> None:
    """A replica snapshotting every 60 s keeps the scaler for one and a half intervals, not for `patience_s`."""
    slow = follow(follow(LoadSource(), "m-a", NOW, 2.5) or LoadSource(), "m-a", NOW + 60, 2.5)
    assert slow is not None and slow.interval == 60.0
    assert follow(slow, "m-b", NOW + 90, patience_s=2.5) is None
    assert follow(slow, "m-b", NOW + 151, patience_s=2.5) == LoadSource("m-b", NOW + 151)


def test_unsigned_snapshots_are_one_series() -> None:
    """Snapshots without a source (an older metrics service) are all accepted, as one series."""
    state = follow(LoadSource(), None, NOW, patience_s=2.5)
    assert state == LoadSource(None, NOW)
    later = follow(state, None, NOW + 0.5, patience_s=2.5)
    assert later == LoadSource(None, NOW + 0.5, interval=0.5)


def test_a_snapshot_without_a_new_report_keeps_the_time_of_its_news() -> None:
    """A snapshot repeating the last one's report count keeps the earlier time; a new count, or none, is news."""
    before = FleetLoaded(window_s=10, rps=50, source="m-a", reports=7)
    assert news_at(FleetLoaded(window_s=10, rps=50, source="m-a", reports=7), before, NOW - 0.7, NOW) == NOW - 0.7
    assert news_at(FleetLoaded(window_s=10, rps=55, source="m-a", reports=8), before, NOW - 0.7, NOW) == NOW
    assert news_at(FleetLoaded(window_s=10, rps=55, source="m-b", reports=7), before, NOW - 0.7, NOW) == NOW
    unsigned = FleetLoaded(window_s=10, rps=50)
    assert news_at(unsigned, unsigned, NOW - 0.7, NOW) == NOW
    assert news_at(before, None, NOW - 0.7, NOW) == NOW


def test_hosts_are_placed_on_only_when_every_one_says_its_max_vms() -> None:
    """Hosts with their max_vms are placed on; one host without (an older provisioner) sends creates to any host."""
    assert on_hosts(fleet(0), {"h1": 4, "h2": 2}).hosts == {"h1": 4, "h2": 2}
    assert on_hosts(fleet(0), {"h1": 4, "h2": None}).hosts == {}


def test_each_answering_hosts_room_is_kept_with_the_vms_it_was_running() -> None:
    """A list's figures become the host's capacity, with its booting, ready and draining VMs as the running ones;
    a list without figures, or a host that did not answer, leaves no capacity behind."""
    records = [VmRecord(vm=name, state=state, since=T0) for name, state in
               [("a", VmState.REQUESTED), ("b", VmState.CLONING), ("c", VmState.BOOTING), ("d", VmState.READY),
                ("e", VmState.DRAINING), ("f", VmState.FAILED)]]
    listed = VmList(host="h1", vms=records, max_vms=10, free_memory_mib=2048, cpus=8, vm_memory_mib=256, vm_vcpus=2)
    state = on_capacity(fleet(0), [listed, VmList(host="h2", max_vms=10)])
    assert state.capacity == {"h1": HostCapacity(2048, 8, 256, 2, running=frozenset({"c", "d", "e"}))}
    assert on_capacity(state, [VmList(host="h2", free_memory_mib=1)]).capacity == {
        "h2": HostCapacity(free_memory_mib=1)
    }
