"""Scale-down that does not flap: a wider band below target, one whole step after the window, none soon after an up."""

from __future__ import annotations

import itertools
from collections.abc import Callable

from services.scaler.core.autoscale import witness
from services.scaler.core.decide import decide
from services.scaler.core.model import AutoscaleMemory, FleetState
from shared.contract.policy import ScalingPolicy
from tests.unit.scaler.fleets import NOW, fleet, load


def _after_window(state: FleetState, per_vm: float | Callable[[int], float], seconds: int) -> list[int]:
    """The desired size at each second of `seconds` of `per_vm` load (the fleet itself stays put)."""
    sizes = []
    for t in range(1, seconds + 1):
        value = per_vm(t) if callable(per_vm) else per_vm
        decision = decide(state, load(state, value, at=NOW + t), NOW + t)
        state = FleetState(**{**decision.state.__dict__, "vms": state.vms, "drains": {}})
        sizes.append(decision.desired)
    return sizes


def test_load_in_the_wider_band_below_target_never_shrinks_the_fleet() -> None:
    """At 85% of target (outside the 10% up band, inside the 20% down band) the size holds past any window."""
    state = fleet(10, policy=ScalingPolicy(max_replicas=20), memory=AutoscaleMemory.seeded(10, NOW))
    assert set(_after_window(state, 8.0 * 0.85, 400)) == {10}


def test_scale_in_lands_on_the_window_peak_in_steps_worth_taking() -> None:
    """Load easing off over two minutes shrinks the fleet only after the window, each step freeing at least 30%."""
    policy = ScalingPolicy(max_replicas=20)
    state = fleet(10, policy=policy, memory=AutoscaleMemory.seeded(10, NOW))
    sizes = _after_window(state, lambda t: max(2.0, 8.0 - 6.0 * t / 120), 600)
    assert set(sizes[:310]) == {10}
    steps = [(a, b) for a, b in itertools.pairwise(sizes) if b != a]
    assert steps and all(b <= a * 0.7 for a, b in steps)
    assert sizes[-1] in (3, 4)  # the floor needs ceil(10 x 2 / 8) = 3; 4 -> 3 would free only 25%


def test_no_scale_down_soon_after_a_scale_up_even_with_a_short_window() -> None:
    """A reversal within `scale_down_after_up_s` of a scale-up is a flap, so the fleet waits it out."""
    policy = ScalingPolicy(max_replicas=20, scale_down_stabilization_s=30)
    state = fleet(4, policy=policy, memory=AutoscaleMemory(actions=((NOW, 2),)))
    sizes = _after_window(state, 2.0, 320)
    assert set(sizes[:299]) == {4} and sizes[-1] == 1


def _witnessed(state: FleetState, per_vm: float, seconds: int) -> FleetState:
    """A follower's view after `seconds` one-second load snapshots of `per_vm` each (it decides nothing)."""
    for t in range(seconds, 0, -1):
        state = witness(state, load(state, per_vm, at=NOW - t), NOW - t)
    return state


def test_a_follower_keeps_one_history_entry_per_snapshot_and_never_changes_the_size() -> None:
    """Witnessing load adds to the demand history only; the desired size and the recommendations stay."""
    state = fleet(10, policy=ScalingPolicy(max_replicas=20))
    seen = _witnessed(state, 2.0, 30)
    assert len(seen.memory.observations) == 30 and seen.desired == 10 and seen.memory.recommendations == ()
    assert witness(seen, load(seen, 2.0, at=NOW - 1), NOW).memory.observations == seen.memory.observations


def test_a_new_leader_with_a_witnessed_window_scales_in_at_once_and_one_without_waits() -> None:
    """A takeover carrying the follower's history may scale in on its first evaluation; a bare one holds."""
    policy = ScalingPolicy(max_replicas=20)
    follower = _witnessed(fleet(10, policy=policy), 2.0, 400)
    carried = AutoscaleMemory(recommendations=((NOW, 10),), observations=follower.memory.observations)
    bare = AutoscaleMemory.seeded(10, NOW)
    assert _after_window(fleet(10, policy=policy, memory=carried), 2.0, 1) == [3]
    assert _after_window(fleet(10, policy=policy, memory=bare), 2.0, 1) == [10]
