"""The status headline counts pooled VMs apart from the serving fleet."""

from __future__ import annotations

from ops.cli.render import fleet_headline
from shared.contract.base import utcnow
from shared.contract.events import VmState
from shared.contract.policy import ScalingPolicy
from shared.contract.status import FleetStatus, VmStatus


def test_a_full_fleet_with_its_pool_reads_green_with_the_pool_apart() -> None:
    """One ready VM for a desired one, plus one pooled: live 1, ready 1 (green), pooled 1."""
    vms = [VmStatus(name="qf-1", state=VmState.READY, since=utcnow()),
           VmStatus(name="qf-2", state=VmState.POOLED, since=utcnow(), pool=True)]
    text = fleet_headline(FleetStatus(desired=1, policy=ScalingPolicy(), vms=vms))
    assert "live 1, ready 1, pooled 1" in text.plain
    assert any(span.style == "green" for span in text.spans)
