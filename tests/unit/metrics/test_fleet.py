"""Fleet shape (VM states, desired size, decisions) and bounded history."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.metrics import fleet as fleet_module
from services.metrics.fleet import FleetView
from services.metrics.state import MetricsState
from shared.contract.events import ScalingDecided, VmState, VmStateChanged
from shared.contract.status import DesiredState
from tests.unit.metrics.builders import T0, backend, report


def event(vm: str, state: VmState, at_s: float) -> VmStateChanged:
    return VmStateChanged(vm=vm, state=state, at=T0 + timedelta(seconds=at_s))


def test_states_are_counted_and_destroyed_vms_leave_the_fleet() -> None:
    """Each VM counts once in its latest state; destroyed VMs count nowhere."""
    view = FleetView(history_points=10, forget_after_s=60)
    view.vm_changed(event("vm-a", VmState.BOOTING, 1), now=1)
    view.vm_changed(event("vm-a", VmState.READY, 2), now=2)
    view.vm_changed(event("vm-b", VmState.READY, 2), now=2)
    view.vm_changed(event("vm-c", VmState.DESTROYED, 3), now=3)
    counts = view.state_counts()
    assert counts["ready"] == 2 and counts["booting"] == 0
    assert "destroyed" not in counts and sum(counts.values()) == 2


def test_an_older_event_does_not_undo_a_newer_one() -> None:
    """An event that arrives late (older `at`) is ignored, so a destroyed VM is not resurrected."""
    view = FleetView(history_points=10, forget_after_s=60)
    view.vm_changed(event("vm-a", VmState.DESTROYED, 5), now=5)
    assert view.vm_changed(event("vm-a", VmState.READY, 4), now=6) is False
    assert view.state_counts()["ready"] == 0


def test_gone_vms_are_forgotten_after_a_while() -> None:
    """Destroyed and failed VMs are dropped after forget_after_s; live ones are kept."""
    view = FleetView(history_points=10, forget_after_s=30)
    view.vm_changed(event("vm-a", VmState.FAILED, 1), now=1)
    view.vm_changed(event("vm-b", VmState.DESTROYED, 1), now=1)
    view.vm_changed(event("vm-c", VmState.READY, 1), now=1)
    assert view.expire(10) == []
    assert sorted(view.expire(40)) == ["vm-a", "vm-b"]
    assert list(view.vms) == ["vm-c"]


def test_too_many_vms_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Events about more VMs than MAX_VMS are refused, known VMs still update."""
    monkeypatch.setattr(fleet_module, "MAX_VMS", 1)
    view = FleetView(history_points=10, forget_after_s=30)
    assert view.vm_changed(event("vm-a", VmState.BOOTING, 1), now=1)
    assert not view.vm_changed(event("vm-b", VmState.BOOTING, 1), now=1)
    assert view.vm_changed(event("vm-a", VmState.READY, 2), now=2)


def test_desired_size_from_an_older_epoch_is_ignored() -> None:
    """The desired size follows the newest (epoch, updated_at); a deposed leader's state is ignored."""
    view = FleetView(history_points=10, forget_after_s=60)
    assert view.desired_changed(DesiredState(desired=3, epoch=2, updated_at=T0))
    assert not view.desired_changed(DesiredState(desired=9, epoch=1, updated_at=T0 + timedelta(seconds=5)))
    assert view.desired == 3


def test_decisions_are_kept_in_a_ring() -> None:
    """Only the newest decisions are kept, while the count of all seen keeps growing."""
    view = FleetView(history_points=10, forget_after_s=60, max_decisions=3)
    for n in range(5):
        view.decided(ScalingDecided(current=n, desired=n + 1, reason="load"))
    assert [d.current for d in view.decisions] == [2, 3, 4]
    assert view.decisions_seen == 5


def test_history_is_bounded_by_history_s() -> None:
    """The state keeps history_s / interval_s points and no more, each with load and fleet shape."""
    state = MetricsState(window_s=10, history_s=20, interval_s=1)
    state.fleet.vm_changed(event("vm-a", VmState.READY, 0), now=0)
    for t in range(1, 51):
        state.aggregator.observe(report("b1", t, [backend("vm-a", 10 * t, errors=t)]), now=float(t))
        state.tick(float(t), T0 + timedelta(seconds=t))
    assert len(state.fleet.history) == 20
    point = state.fleet.history[-1]
    assert point.rps == pytest.approx(10.0) and point.errors_ps == pytest.approx(1.0)
    assert point.states["ready"] == 1


def test_snapshots_are_signed_by_the_replica_that_took_them() -> None:
    """Each `fleet.load` snapshot names its metrics replica, so a scaler can follow one replica's series."""
    signed = MetricsState(window_s=10, history_s=20, interval_s=1, source="metrics-a1b2c3")
    snapshot, _ = signed.tick(1.0, T0)
    assert snapshot.source == "metrics-a1b2c3"
    assert MetricsState(window_s=10, history_s=20, interval_s=1).tick(1.0, T0)[0].source is None
