"""Open flows from l4 balancers: a gauge averaged over the window per VM, added up over balancers and VMs."""

from __future__ import annotations

import pytest

from services.metrics.aggregate import Aggregator
from shared.contract.load import BackendLoad
from tests.unit.metrics.builders import report

WINDOW = 10.0


def test_flows_are_averaged_over_the_window_and_summed_over_balancers() -> None:
    """Two balancers seeing 10 and 30 flows to one VM give it 40; the fleet figure adds the VMs up."""
    agg = Aggregator(WINDOW, forget_after_s=60)
    for t in range(1, 6):
        agg.observe(report("b1", t, [BackendLoad(vm="vm-a", flows=10), BackendLoad(vm="vm-b", flows=4)]), now=float(t))
        agg.observe(report("b2", t, [BackendLoad(vm="vm-a", flows=30)]), now=float(t))
    snap = agg.snapshot(5.0, report("b1", 5, []).at)
    per_vm = {v.vm: v.flows for v in snap.vms}
    assert per_vm == {"vm-a": pytest.approx(40.0), "vm-b": pytest.approx(4.0)}
    assert snap.flows == pytest.approx(44.0)


def test_flows_that_fell_are_no_counter_reset() -> None:
    """Flows are a gauge: fewer of them in the next report keeps the run (and its request counts)."""
    agg = Aggregator(WINDOW, forget_after_s=60)
    agg.observe(report("b1", 1, [BackendLoad(vm="vm-a", flows=20, packets=100)]), now=1.0)
    agg.observe(report("b1", 2, [BackendLoad(vm="vm-a", flows=0, packets=150)]), now=2.0)
    assert agg.snapshot(2.0, report("b1", 2, []).at).vms[0].flows == pytest.approx(10.0)
