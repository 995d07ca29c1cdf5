"""Properties of `decide()` over generated fleets and loads (hypothesis)."""

from __future__ import annotations

from hypothesis import assume, given
from hypothesis import strategies as st

from services.scaler.core.decide import decide
from services.scaler.core.model import DrainCommand
from shared.contract.policy import ScalingPolicy
from tests.unit.scaler.fleets import NOW, fleet, load

per_vm = st.floats(min_value=0, max_value=10_000, allow_nan=False)


@st.composite
def bounded(draw: st.DrawFn) -> tuple[ScalingPolicy, int, int]:
    """A policy with bounds, a fleet size and a desired size inside the bounds."""
    low = draw(st.integers(0, 6))
    high = draw(st.integers(max(low, 1), 30))
    policy = ScalingPolicy(min_replicas=low, max_replicas=high, tolerance=draw(st.floats(0, 0.5)))
    return policy, draw(st.integers(0, 30)), draw(st.integers(low, high))


@given(bounded(), st.lists(per_vm, min_size=1, max_size=20), st.integers(0, 3))
def test_desired_never_leaves_the_bounds(case: tuple[ScalingPolicy, int, int], loads: list[float], step: int) -> None:
    """Whatever the load sequence, every decision stays within [min_replicas, max_replicas]."""
    policy, ready, desired = case
    state = fleet(ready, policy=policy, desired=desired)
    for i, value in enumerate(loads):
        now = NOW + i * (step + 1)
        state = decide(state, load(state, value, at=now), now).state
        assert policy.min_replicas <= state.desired <= policy.max_replicas


@given(
    st.integers(1, 10), st.floats(9, 100), st.lists(st.tuples(st.floats(0.5, 20), per_vm), min_size=1, max_size=25)
)
def test_no_scale_down_inside_the_window_after_a_spike(
    ready: int, spike: float, after: list[tuple[float, float]]
) -> None:
    """After a spike, no load of any size brings the fleet below the spike's size before the window ends."""
    policy = ScalingPolicy(max_replicas=1000, scale_down_stabilization_s=300)
    state = fleet(ready, policy=policy)
    state = decide(state, load(state, spike), NOW).state
    peak, now = state.desired, NOW
    for dt, value in after:
        now += dt
        assume(now < NOW + 300)
        state = decide(state, load(state, value, at=now), now).state
        assert state.desired >= peak


@given(st.integers(1, 30), st.floats(0, 0.5), st.floats(-1, 1))
def test_tolerance_band_holds_the_size(ready: int, tolerance: float, where: float) -> None:
    """A per-VM load within the tolerance band around the target changes nothing."""
    policy = ScalingPolicy(max_replicas=100, tolerance=tolerance)
    state = fleet(ready, policy=policy)
    value = policy.target * (1 + where * tolerance * 0.999)
    decision = decide(state, load(state, value), NOW)
    assert decision.desired == ready and decision.commands == ()


@given(bounded(), per_vm, st.floats(0.001, 1e5))
def test_stale_data_changes_nothing(case: tuple[ScalingPolicy, int, int], value: float, late: float) -> None:
    """A snapshot older than stale_after_s never changes the size and never drains a VM."""
    policy, ready, desired = case
    state = fleet(ready, policy=policy, desired=desired)
    old = load(state, value, at=NOW - policy.stale_after_s - late)
    decision = decide(state, old, NOW)
    assert decision.desired == desired
    assert not any(isinstance(c, DrainCommand) for c in decision.commands) or ready > desired
