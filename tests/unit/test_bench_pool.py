"""The pool reaction bench's figures: nearest-rank quantiles, and what counts as a settled fleet."""

from __future__ import annotations

from typing import Any

from bench.pool_reaction import nearest_rank, settled
from shared.contract.events import VmState, VmStateChanged


def test_nearest_rank_takes_a_sample_and_p95_of_a_handful_is_the_worst() -> None:
    """With five rounds p50 is the middle sample and p95 the slowest; nothing is interpolated."""
    values = [2.5, 0.4, 0.9, 0.3, 0.6]
    assert nearest_rank(values, 0.5) == 0.6
    assert nearest_rank(values, 0.95) == 2.5


class _Watch:
    def __init__(self, **states: VmState) -> None:
        self.latest = {vm: VmStateChanged(vm=vm, state=state) for vm, state in states.items()}


def test_a_fleet_is_settled_only_with_nothing_on_its_way() -> None:
    """One ready and one pooled is settled; a VM still draining or booting beside them is not; gone VMs don't count."""
    watch: Any = _Watch(a=VmState.READY, b=VmState.POOLED, c=VmState.DESTROYED)
    assert settled(watch, 1, 1)()
    watch.latest["d"] = VmStateChanged(vm="d", state=VmState.DRAINING)
    assert not settled(watch, 1, 1)()
    assert not settled(_Watch(a=VmState.READY, b=VmState.BOOTING), 1, 0)()  # type: ignore[arg-type]
