"""The `flows` signal (open connections per VM, from l4 balancers): read, tracked and started from like the others."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.scaler.core.decide import decide
from services.scaler.core.model import DrainCommand, LoadView, VmLoadView
from services.scaler.core.reading import demand, observe
from services.scaler.core.reconcile import reconcile
from services.scaler.core.track import load_view, on_report
from shared.contract.load import BackendLoad, BalancerReported, FleetLoaded, VmLoad
from shared.contract.policy import ScalingPolicy, Signal
from tests.unit.scaler.fleets import NOW, fleet


def _flows(names: list[str], per_vm: float) -> LoadView:
    views = {n: VmLoadView(flows=per_vm) for n in names}
    return LoadView(at=NOW, flows=per_vm * len(names), vms=views)


def test_flows_per_vm_is_the_mean_over_warm_vms_and_demand_the_fleet_total() -> None:
    """Observed flows are the warm VMs' mean; the fleet-wide demand is the snapshot's total."""
    state = fleet(2)
    load = LoadView(at=NOW, flows=30.0, vms={"vm0": VmLoadView(flows=10.0), "vm1": VmLoadView(flows=20.0)})
    observed = observe(Signal.FLOWS, list(state.vms.values()), load)
    assert observed == pytest.approx(15.0)
    assert demand(Signal.FLOWS, 15.0, 2, load) == pytest.approx(30.0)


def test_without_per_vm_figures_the_fleet_total_is_spread_over_warm_vms() -> None:
    """A snapshot with only the fleet's flows reads as that total over the warm VMs."""
    state = fleet(4)
    assert observe(Signal.FLOWS, list(state.vms.values()), LoadView(at=NOW, flows=40.0)) == pytest.approx(10.0)


def test_flows_above_target_scale_out_and_inside_the_band_hold() -> None:
    """Target tracking on flows: 2 VMs at 2x the target become 4; at the target they stay 2."""
    policy = ScalingPolicy(signal=Signal.FLOWS, target=50)
    state = fleet(2, policy=policy)
    assert decide(state, _flows(["vm0", "vm1"], 100.0), NOW).desired == 4
    assert decide(state, _flows(["vm0", "vm1"], 50.0), NOW).desired == 2


def test_flows_do_not_move_a_policy_on_another_signal() -> None:
    """Flows in the snapshot say nothing to an outstanding-requests policy: no requests, no scale-out."""
    state = fleet(2)
    assert decide(state, _flows(["vm0", "vm1"], 1000.0), NOW).desired == 2


def test_the_snapshot_carries_flows_into_the_scaler_view() -> None:
    """`fleet.load`'s per-VM and fleet flows reach the scaler's load view."""
    snapshot = FleetLoaded(window_s=10, flows=12.0, vms=[VmLoad(vm="vm0", flows=12.0)])
    view = load_view(snapshot, NOW)
    assert view.flows == 12.0 and view.vms["vm0"].flows == 12.0


def test_flows_target_range_is_checked() -> None:
    """A flows target outside its sane range is refused like the other signals'."""
    with pytest.raises(ValueError, match="open flows"):
        ScalingPolicy(signal=Signal.FLOWS, target=0.01)


def test_scale_in_under_l4_drains_the_vm_with_the_fewest_flows() -> None:
    """An l4 balancer's report counts open flows as in flight, so a scale-in drains the least connected VM."""
    report = BalancerReported(balancer="l4", started_at=datetime.now(UTC), backends=[
        BackendLoad(vm="vm0", flows=40), BackendLoad(vm="vm1", flows=3), BackendLoad(vm="vm2", flows=25)])
    state = on_report(fleet(3, desired=2), report, NOW)
    commands, _, _ = reconcile(state, NOW)
    assert [c.vm for c in commands if isinstance(c, DrainCommand)] == ["vm1"]
