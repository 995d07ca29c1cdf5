"""`decide()` as a table, and the behaviours around it: windows, limits, holds, warm-up, bounds."""

from __future__ import annotations

from dataclasses import replace

import pytest

from services.scaler.core.decide import decide
from services.scaler.core.model import AutoscaleMemory, BalancerView, CreateCommand, DrainCommand, FleetState, LoadView
from shared.contract.events import VmState
from shared.contract.policy import ScalingPolicy, Signal
from tests.unit.scaler.fleets import NOW, fleet, load, vm


@pytest.mark.parametrize(
    ("ready", "per_vm", "expected"),
    [
        (2, 8.0, 2),  # on target
        (2, 8.7, 2),  # inside the 10% dead band
        (2, 7.3, 2),  # inside the band, below
        (2, 12.0, 3),  # ceil(2 x 1.5)
        (2, 16.0, 4),  # ceil(2 x 2)
        (4, 40.0, 10),  # big jump sized at once (up to +400% per action), capped at max_replicas
        (3, 2.0, 3),  # scale-down waits for the window
        (9, 80.0, 10),  # never above max_replicas
    ],
)
def test_decide_table(ready: int, per_vm: float, expected: int) -> None:
    """Target tracking on outstanding per VM gives the size in the table (defaults: target 8, max 10)."""
    state = fleet(ready, memory=AutoscaleMemory.seeded(ready, NOW - 1))
    assert decide(state, load(state, per_vm), NOW).desired == expected


def test_scale_up_sends_creates_at_once() -> None:
    """A load above target makes the leader send the missing creates in the same evaluation."""
    state = fleet(2)
    decision = decide(state, load(state, 16.0), NOW)
    creates = [c for c in decision.commands if isinstance(c, CreateCommand)]
    assert decision.desired == 4 and len(creates) == 2
    assert len({c.request_id for c in creates}) == 2 and len(decision.state.pending) == 2


@pytest.mark.parametrize(("headroom", "expected"), [(0.0, 4), (0.2, 5), (0.5, 6)])
def test_scale_up_headroom_lands_above_the_recommendation(headroom: float, expected: int) -> None:
    """`scale_up_headroom` adds its share on top of a scale-up: ceil(2 x 2 x (1 + headroom)) VMs."""
    state = fleet(2, policy=ScalingPolicy(scale_up_headroom=headroom))
    assert decide(state, load(state, 16.0), NOW).desired == expected


def test_scale_up_headroom_leaves_the_band_and_scale_down_alone() -> None:
    """Headroom applies only to scaling up: inside the band the fleet holds, as without it."""
    state = fleet(2, policy=ScalingPolicy(scale_up_headroom=0.5), memory=AutoscaleMemory.seeded(2, NOW - 1))
    assert decide(state, load(state, 8.7), NOW).desired == 2


def test_creates_in_flight_are_not_sent_twice() -> None:
    """A second evaluation with the same load sends nothing: pending creates count as capacity."""
    state = fleet(2)
    first = decide(state, load(state, 16.0), NOW)
    second = decide(first.state, load(state, 16.0), NOW + 1)
    assert second.desired == 4 and second.commands == ()


def test_scale_down_only_after_the_window_and_to_the_highest_recommendation() -> None:
    """After a spike, low load shrinks the fleet only once the 300 s window (and 10 s settle) has forgotten it."""
    state = fleet(4)
    state = decide(state, load(state, 8.0), NOW).state
    for t in range(1, 321, 10):
        decision = decide(state, load(state, 2.0, at=NOW + t), NOW + t)
        assert decision.desired == 4, t
        state = decision.state
    later = decide(state, load(state, 2.0, at=NOW + 321), NOW + 321)
    assert later.desired == 1
    assert [c.vm for c in later.commands if isinstance(c, DrainCommand)] == ["vm0", "vm1", "vm2"]


def test_one_scale_up_action_per_period() -> None:
    """Within `scale_up_period_s` of a scale-up, a further rise waits for the period to end."""
    state = fleet(2, policy=ScalingPolicy(scale_up_period_s=5, max_replicas=50))
    state = decide(state, load(state, 12.0), NOW).state
    assert state.desired == 3
    assert decide(state, load(state, 24.0, at=NOW + 2), NOW + 2).desired == 3
    assert decide(state, load(state, 24.0, at=NOW + 6), NOW + 6).desired == 6


def test_cooldown_holds_after_an_action() -> None:
    """With a cooldown, no action in either direction happens until it has passed."""
    state = fleet(2, policy=ScalingPolicy(cooldown_s=60))
    state = decide(state, load(state, 12.0), NOW).state
    held = decide(state, load(state, 40.0, at=NOW + 30), NOW + 30)
    assert held.desired == 3 and "cooldown" in held.reason


@pytest.mark.parametrize("age", [6.0, 60.0, 3600.0])
def test_stale_load_holds(age: float) -> None:
    """A snapshot older than stale_after_s changes nothing, whatever it says."""
    state = fleet(3)
    for per_vm in (0.0, 100.0):
        decision = decide(state, load(state, per_vm, at=NOW - age), NOW)
        assert decision.desired == 3 and decision.commands == ()
        assert "stale" in decision.reason


def test_slow_balancer_reports_stretch_the_staleness_limit() -> None:
    """With a balancer reporting every 10 s, load news 8 s old is still fresh; 22 s old is stale."""
    slow = {"b1": BalancerView(id="b1", last_seen=NOW, interval_s=10.0)}
    state = fleet(2, balancers=slow, memory=AutoscaleMemory.seeded(2, NOW - 1))
    assert decide(state, load(state, 16.0, at=NOW - 8), NOW).desired == 4
    assert "stale after 21 s" in decide(state, load(state, 16.0, at=NOW - 22), NOW).reason


def test_no_load_holds_even_below_min() -> None:
    """Without any load snapshot the size is not touched (the first size comes from data or a command)."""
    state = fleet(0, desired=0)
    decision = decide(state, None, NOW)
    assert decision.desired == 0 and decision.commands == ()


def test_fresh_data_enforces_bounds() -> None:
    """With fresh data a size below min_replicas is raised to it."""
    state = fleet(0, desired=0, policy=ScalingPolicy(min_replicas=2))
    decision = decide(state, LoadView(at=NOW), NOW)
    assert decision.desired == 2 and len(decision.commands) == 2


def test_manual_hold_pauses_autoscaling() -> None:
    """Inside the manual hold the autoscaler keeps the commanded size."""
    state = fleet(2, hold_until=NOW + 100)
    decision = decide(state, load(state, 30.0), NOW)
    assert decision.desired == 2 and "manual" in decision.reason
    assert decide(state, load(state, 30.0, at=NOW + 101), NOW + 101).desired > 2


def test_warming_vms_count_as_capacity_but_their_load_is_ignored() -> None:
    """A VM inside its warm-up is capacity for scale-up, and its (low) load does not pull the average down."""
    state = fleet(2, desired=3)
    warming = vm("vm9", created=NOW - 20, ready_at=NOW - 2)
    state = replace(state, vms=dict(state.vms) | {"vm9": warming})
    snapshot = load(state, 12.0)
    snapshot = replace(snapshot, vms=dict(snapshot.vms) | {"vm9": replace(snapshot.vms["vm9"], outstanding=0.0)})
    decision = decide(state, snapshot, NOW)
    assert decision.desired == 3 and decision.commands == ()


def test_booting_vms_stop_scale_down() -> None:
    """While VMs boot, an idle-looking fleet is not shrunk below what is booting plus what is needed."""
    state = fleet(2, desired=4, memory=AutoscaleMemory())
    booting = {f"b{i}": vm(f"b{i}", VmState.BOOTING, created=NOW - 5) for i in range(2)}
    state = replace(state, vms=dict(state.vms) | booting)
    assert decide(state, load(state, 7.0), NOW).desired == 4


def test_traffic_on_an_empty_fleet_starts_vms() -> None:
    """Outstanding requests with no VM at all (min 0) start enough VMs for them."""
    state = fleet(0, desired=0, policy=ScalingPolicy(min_replicas=0))
    decision = decide(state, LoadView(at=NOW, outstanding=20.0), NOW)
    assert decision.desired == 3


def test_rps_and_p95_signals_track_their_target() -> None:
    """The rps and p95 signals scale by their ratio to the target like outstanding does."""
    rps = fleet(2, policy=ScalingPolicy(signal=Signal.RPS, target=100))
    assert decide(rps, load(rps, 200.0, signal="rps"), NOW).desired == 4
    p95 = fleet(2, policy=ScalingPolicy(signal=Signal.P95_LATENCY, target=0.2))
    assert decide(p95, load(p95, 0.3, signal="p95"), NOW).desired == 3


def test_decision_reports_signal_values() -> None:
    """A decision carries the observed value, the target and the recommendation it came from."""
    state = fleet(2)
    decision = decide(state, load(state, 12.0), NOW)
    assert decision.signals.observed == pytest.approx(12.0)
    assert decision.signals.target == 8.0 and decision.signals.recommendation == 3
    assert "outstanding 12" in decision.reason



def test_fresh_scaler_without_a_stored_size_leaves_a_running_fleet_alone() -> None:
    """With no desired size ever stored and no data, existing VMs are neither drained nor added to."""
    state = fleet(3, desired=0, desired_known=False)
    decision = decide(state, None, NOW)
    assert decision.commands == () and decision.desired == 0


def _rps_history(policy: ScalingPolicy, seconds: int) -> FleetState:
    """Four VMs at 60 requests/s each for `seconds` one-second evaluations, wobbling by 1 request/s."""
    state = fleet(4, policy=policy, memory=AutoscaleMemory.seeded(4, NOW - seconds))
    for t in range(seconds, 0, -1):
        snapshot = replace(load(state, 60.0 + (t % 2), at=NOW - t, signal="rps"), window_s=10.0)
        state = decide(state, snapshot, NOW - t).state
    return state


def test_lookahead_sizes_a_rising_step_but_never_triggers_one() -> None:
    """A jump far above the noise in a 10 s average is sized as the step it implies; inside the band, nothing."""
    policy = ScalingPolicy(signal=Signal.RPS, target=70, max_replicas=50)
    state = _rps_history(policy, 30)
    inside = decide(state, replace(load(state, 75.0, signal="rps"), window_s=10.0), NOW)
    assert inside.desired == 4
    rising = decide(state, replace(load(state, 84.0, signal="rps"), window_s=10.0), NOW)
    flat = policy.model_copy(update={"scale_up_lookahead_s": 0})
    plain = decide(replace(state, policy=flat), replace(load(state, 84.0, signal="rps"), window_s=10.0), NOW)
    assert plain.desired == 5  # ceil(4 x 84 / 70)
    assert rising.desired == 17  # a 10 s mean up 92/s in one second is a 920/s step: ceil((244 + 920) / 70)
