"""Bugs seen on real VMs: destroyed and failed are final, and a resize never creates a VM twice."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from services.scaler.core.model import (
    AutoscaleMemory,
    BalancerView,
    CreateCommand,
    DestroyCommand,
    DrainCommand,
    FleetState,
)
from services.scaler.core.reconcile import reconcile
from services.scaler.core.track import new_term, on_created, on_drained, on_lists, on_report, on_vm_event
from shared.contract.draining import BackendDrained
from shared.contract.events import VmState, VmStateChanged
from shared.contract.load import BackendLoad, BalancerReported
from shared.contract.provisioning import VmRecord
from tests.unit.scaler.fleets import NOW, fleet, vm

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _kinds(commands: tuple[object, ...], kind: type) -> list[str]:
    return [c.vm for c in commands if isinstance(c, kind)]  # type: ignore[attr-defined]


def _shrunk_three_to_one() -> tuple[FleetState, list[str]]:
    """3 -> 1 with one live balancer: both victims drained, destroyed, and their `destroyed` events seen."""
    balancer = BalancerView(id="b1", last_seen=NOW + 2, outstanding={"vm0": 4})
    state = fleet(3, desired=1, balancers={"b1": balancer})
    commands, state, _ = reconcile(state, NOW)
    victims = _kinds(commands, DrainCommand)
    for name in victims:
        state = on_drained(state, BackendDrained(vm=name, balancer="b1"))
    commands, state, _ = reconcile(state, NOW + 1)
    assert sorted(_kinds(commands, DestroyCommand)) == sorted(victims)
    for name in victims:
        state = on_vm_event(state, VmStateChanged(vm=name, state=VmState.DESTROYED, host="h1"), NOW + 2)
    return state, victims


def test_list_asked_before_a_destroy_does_not_bring_the_vm_back_for_a_second_drain() -> None:
    """A list answered while the victims were still draining, arriving after their `destroyed`, resurrects nothing."""
    state, victims = _shrunk_three_to_one()
    records = [VmRecord(vm="vm0", state=VmState.READY, since=T0, host="h1")]
    records += [VmRecord(vm=n, state=VmState.DRAINING, since=T0, host="h1") for n in victims]
    state = on_lists(state, [("h1", records)], NOW + 1.5, NOW + 2.5)
    assert sorted(state.vms) == ["vm0"]
    commands, _, _ = reconcile(state, NOW + 3)
    assert commands == ()


def test_late_events_replies_and_reports_do_not_resurrect_a_destroyed_vm() -> None:
    """A republished `draining`/`ready`, a late create reply and a balancer report naming the VM leave it gone."""
    state, victims = _shrunk_three_to_one()
    name = victims[0]
    state = on_vm_event(state, VmStateChanged(vm=name, state=VmState.DRAINING, host="h1"), NOW + 3)
    state = on_vm_event(state, VmStateChanged(vm=name, state=VmState.READY, host="h1"), NOW + 3)
    state = on_created(state, "r9", VmRecord(vm=name, state=VmState.REQUESTED, since=T0, host="h1"), NOW + 3)
    report = BalancerReported(balancer="b1", started_at=T0, backends=[BackendLoad(vm=name, outstanding=0)])
    state = on_report(state, report, NOW + 3)
    assert name not in state.vms
    commands, _, _ = reconcile(state, NOW + 4)
    assert commands == ()


def test_failed_is_final_until_destroyed() -> None:
    """A failed VM stays failed whatever is republished for it, and is destroyed without a drain."""
    state = fleet(2, desired=2)
    state = on_vm_event(state, VmStateChanged(vm="vm1", state=VmState.FAILED, host="h1"), NOW)
    state = on_vm_event(state, VmStateChanged(vm="vm1", state=VmState.READY, host="h1"), NOW + 0.1)
    state = on_lists(state, [("h1", [VmRecord(vm="vm1", state=VmState.DRAINING, since=T0)])], NOW - 1, NOW + 0.2)
    assert state.vms["vm1"].state is VmState.FAILED
    commands, _, _ = reconcile(state, NOW + 0.3)
    assert _kinds(commands, DestroyCommand) == ["vm1"] and _kinds(commands, DrainCommand) == []


def test_reelection_with_a_create_in_flight_does_not_create_it_again() -> None:
    """Going 1 -> 2, a lease lapse and re-election before the create is answered sends no second create."""
    state = fleet(1, desired=2)
    commands, state, _ = reconcile(state, NOW)
    assert sum(isinstance(c, CreateCommand) for c in commands) == 1
    state = new_term(state, epoch=2, leader="scaler", memory=AutoscaleMemory.seeded(2, NOW + 1))
    commands, state, _ = reconcile(state, NOW + 1)
    assert commands == ()


@pytest.mark.parametrize("reply_first", [True, False])
def test_reply_and_event_for_one_create_count_it_once_in_either_order(reply_first: bool) -> None:
    """The `requested` event and the create reply for the same VM make one VM: no create, no drain follows."""
    state = fleet(1, desired=2)
    (create,), state, _ = reconcile(state, NOW)
    assert isinstance(create, CreateCommand)
    rid = create.request_id
    record = VmRecord(vm="new", state=VmState.REQUESTED, since=T0, request_id=rid, host="h1")
    event = VmStateChanged(vm="new", state=VmState.REQUESTED, request_id=rid, host="h1")
    for use_reply in (reply_first, not reply_first):
        state = on_created(state, rid, record, NOW + 1) if use_reply else on_vm_event(state, event, NOW + 1)
        commands, state, _ = reconcile(state, NOW + 1)
        assert commands == ()


def test_surplus_removes_a_booting_vm_before_the_ready_one_and_without_a_drain() -> None:
    """With one ready and two booting VMs for a size of 2, a booting VM is destroyed at once; the ready one stays."""
    vms = {"old": vm("old", created=1.0), "b1": vm("b1", VmState.BOOTING, created=5.0),
           "b2": vm("b2", VmState.BOOTING, created=6.0)}
    state = replace(fleet(0, desired=2), vms=vms)
    commands, state, _ = reconcile(state, NOW)
    assert _kinds(commands, DrainCommand) == []
    assert _kinds(commands, DestroyCommand) == ["b1"]
