"""The churn budget: actions and flaps per rolling hour widen the bands, then hold scale-ins, never scale-outs."""

from __future__ import annotations

import pytest

from services.scaler.core.autoscale import autoscale, remember, witness
from services.scaler.core.boottimes import NO_LEAD
from services.scaler.core.churn import Budget, budget, flaps, guard, would_flap
from services.scaler.core.model import AutoscaleMemory, FleetState
from shared.contract.policy import ScalingPolicy
from tests.unit.scaler.fleets import NOW, fleet, load

POLICY = ScalingPolicy(max_replicas=40)


def _ups(count: int, every: float = 60.0, end: float = NOW) -> tuple[tuple[float, int], ...]:
    """`count` scale-ups of one VM, `every` seconds apart, the last at `end`."""
    return tuple((end - every * (count - 1 - i), 1) for i in range(count))


def _flapping(count: int, end: float = NOW) -> tuple[tuple[float, int], ...]:
    """Up and down in turn, 100 s apart: every action after the first is a flap."""
    return tuple((end - 100.0 * (count - 1 - i), 1 if i % 2 == 0 else -1) for i in range(count))


@pytest.mark.parametrize(("actions", "policy", "used", "flapped", "widen", "hold"), [
    ((), POLICY, 0, 0, 1.0, False),
    (_ups(5), POLICY, 5, 0, 1.0, False),
    (_ups(30), POLICY, 30, 0, 1.0, False),
    (_ups(42), POLICY, 42, 0, 1.5, False),
    (_ups(53), POLICY, 53, 0, pytest.approx(1.958, abs=1e-3), False),
    (_ups(54), POLICY, 54, 0, 2.0, True),
    (_ups(80, every=40.0), POLICY, 80, 0, 2.0, True),
    (_ups(54, end=NOW - 3600.0), POLICY, 0, 0, 1.0, False),
    (_ups(54, every=120.0), POLICY, 30, 0, 1.0, False),
    (_flapping(4), POLICY, 4, 3, 1.0, False),
    (_flapping(5), POLICY, 5, 4, 1.5, False),
    (_flapping(6), POLICY, 6, 5, 2.0, True),
    (_ups(54), POLICY.model_copy(update={"max_actions_per_hour": 0}), 54, 0, 1.0, False),
    (_flapping(6), POLICY.model_copy(update={"max_flaps_per_hour": 0}), 6, 5, 1.0, False),
    (_ups(3), POLICY.model_copy(update={"max_actions_per_hour": 3}), 3, 0, 2.0, True),
    (_ups(54), POLICY.model_copy(update={"max_actions_per_hour": 0, "max_flaps_per_hour": 0}), 0, 0, 1.0, False),
])
def test_the_budget_widens_from_half_spent_and_holds_at_the_reserve(
    actions: tuple[tuple[float, int], ...], policy: ScalingPolicy, used: int, flapped: int, widen: float, hold: bool,
) -> None:
    """Half the budget spent within the hour starts widening, a tenth left (or one flap short) holds; age refills."""
    got = budget(actions, policy, NOW)
    assert (got.actions, got.flaps, got.widen, got.hold_in) == (used, flapped, widen, hold)
    assert bool(got.words) == (got.widen > 1.0)


def test_a_flap_is_a_reversal_inside_the_flap_window() -> None:
    """Up then down within 300 s is a flap; the same reversal 300 s or more apart is not, nor two ups."""
    assert flaps(((0.0, 1), (299.0, -1)), -1.0) == 1
    assert flaps(((0.0, 1), (300.0, -1)), -1.0) == 0
    assert flaps(((0.0, 1), (10.0, 2)), -1.0) == 0
    assert flaps(((0.0, -1), (10.0, 1), (20.0, -1)), 5.0) == 2


@pytest.mark.parametrize(("actions", "delta", "flap"), [
    ((), 1, False),
    (((NOW - 100.0, -2),), 1, True),
    (((NOW - 100.0, -2),), -1, False),
    (((NOW - 300.0, -2),), 1, False),
    (((NOW - 10.0, 2),), -1, True),
    (((NOW - 10.0, 2),), 0, False),
])
def test_would_flap_sees_a_reversal_of_the_last_action(actions: tuple[tuple[float, int], ...], delta: int,
                                                       flap: bool) -> None:
    """An action now flaps when it goes the other way from the last one, less than 300 s after it."""
    assert would_flap(actions, NOW, delta) is flap


@pytest.mark.parametrize(("tolerance", "down", "widen", "up_after", "down_after"), [
    (0.1, 0.3, 1.0, 0.1, 0.3),
    (0.1, 0.3, 1.5, 0.15, 0.45),
    (0.1, 0.3, 2.0, 0.2, 0.6),
    (0.15, 0.4, 2.0, 0.2, 0.6),
    (0.3, 0.7, 2.0, 0.3, 0.7),
])
def test_widened_bands_stop_at_their_caps(tolerance: float, down: float, widen: float, up_after: float,
                                          down_after: float) -> None:
    """The scale-up band widens to at most 20% over target, the scale-in band to 60% (a policy's wider band stays)."""
    policy = POLICY.model_copy(update={"tolerance": tolerance, "scale_down_tolerance": down})
    got = Budget(widen=widen).bands(policy)
    assert (got.tolerance, got.scale_down_tolerance) == pytest.approx((up_after, down_after))


def _quiet(ready: int, per_vm: float, actions: tuple[tuple[float, int], ...]) -> FleetState:
    """`ready` warm VMs that saw `per_vm` for longer than the scale-down window, with these past actions."""
    state = fleet(ready, policy=POLICY, memory=AutoscaleMemory(actions=actions))
    for t in range(320, 0, -1):
        state = witness(state, load(state, per_vm, at=NOW - t), NOW - t)
    return state


def test_the_budget_holds_a_scale_in_and_says_so() -> None:
    """A scale-in the load allows waits while 54 of 60 actions are spent this hour."""
    calm = _quiet(10, 2.0, ())
    assert autoscale(calm, load(calm, 2.0), NOW, NO_LEAD).desired < 10
    spent = _quiet(10, 2.0, _ups(54, end=NOW - 400.0))
    held = autoscale(spent, load(spent, 2.0), NOW, NO_LEAD)
    assert held.desired == 10
    assert "churn budget: 54 of 60 actions this hour: holding scale-in" in held.reason


def test_the_budget_refills_as_actions_age_out_of_the_hour() -> None:
    """The same 54 actions, an hour older, no longer hold the scale-in."""
    aged = _quiet(10, 2.0, _ups(54, end=NOW - 3600.0 - 400.0))
    assert autoscale(aged, load(aged, 2.0), NOW, NO_LEAD).desired < 10


@pytest.mark.parametrize(("per_vm", "actions", "grows"), [
    (8.0 * 1.14, (), True),
    (8.0 * 1.14, _ups(42, end=NOW - 400.0), False),
    (8.0 * 1.25, _ups(42, end=NOW - 400.0), True),
    (8.0 * 1.25, _ups(80, every=40.0, end=NOW - 400.0), True),
    (8.0 * 3.0, _ups(200, every=15.0, end=NOW - 400.0), True),
])
def test_a_scale_out_is_slowed_by_widening_never_blocked(per_vm: float, actions: tuple[tuple[float, int], ...],
                                                         grows: bool) -> None:
    """14% over target waits in a band widened to 15%; 25% over scales out whatever was spent (bands stop at 20%)."""
    state = fleet(10, policy=POLICY, memory=AutoscaleMemory(actions=actions))
    assert (autoscale(state, load(state, per_vm), NOW, NO_LEAD).desired > 10) is grows


def test_the_actions_of_the_hour_are_remembered_only_while_a_budget_is_on() -> None:
    """The rate limits need 5 minutes of actions; the budget keeps the hour (and a flap window) more."""
    memory = AutoscaleMemory(actions=((NOW - 3000.0, 1), (NOW - 100.0, -1)))
    kept = remember(memory, POLICY, NOW, 10, 0)
    off = remember(memory, POLICY.model_copy(update={"max_actions_per_hour": 0, "max_flaps_per_hour": 0}), NOW, 10, 0)
    assert kept.actions == memory.actions
    assert off.actions == ((NOW - 100.0, -1),)


@pytest.mark.parametrize(("actions", "policy", "tolerance", "words"), [
    ((), POLICY, 0.1, ""),
    (((NOW - 100.0, -2),), POLICY, 0.2, "flap guard: 100 s after a scale-in, a scale-out waits for 20% over target"),
    (((NOW - 300.0, -2),), POLICY, 0.1, ""),
    (((NOW - 10.0, 2),), POLICY, 0.1, ""),
    (((NOW - 100.0, -2),), POLICY.model_copy(update={"flap_guard_tolerance": 0.0}), 0.1, ""),
    (((NOW - 100.0, -2),), POLICY.model_copy(update={"tolerance": 0.3}), 0.3, ""),
    (((NOW - 100.0, -2),), POLICY.model_copy(update={"flap_guard_tolerance": 0.35}), 0.35,
     "flap guard: 100 s after a scale-in, a scale-out waits for 35% over target"),
])
def test_the_flap_guard_widens_the_scale_up_band_only_inside_the_flap_window(
    actions: tuple[tuple[float, int], ...], policy: ScalingPolicy, tolerance: float, words: str,
) -> None:
    """Within 300 s of a scale-in the scale-up band is the guard's; after it, after a scale-up, or off, the policy's."""
    got, said = guard(policy, policy, actions, NOW)
    assert got.tolerance == pytest.approx(tolerance)
    assert said == words
    assert got.scale_down_tolerance == policy.scale_down_tolerance


@pytest.mark.parametrize(("per_vm", "actions", "grows"), [
    (8.0 * 1.15, (), True),
    (8.0 * 1.15, ((NOW - 60.0, -3),), False),
    (8.0 * 1.15, ((NOW - 400.0, -3),), True),
    (8.0 * 1.15, ((NOW - 400.0, 3),), True),
    (8.0 * 1.3, ((NOW - 60.0, -3),), True),
])
def test_a_re_rise_just_after_a_scale_in_is_served_by_the_headroom(
    per_vm: float, actions: tuple[tuple[float, int], ...], grows: bool,
) -> None:
    """15% over target scales out, except within 300 s of a scale-in; 30% over scales out even then."""
    state = fleet(10, policy=POLICY, memory=AutoscaleMemory(actions=actions))
    assert (autoscale(state, load(state, per_vm), NOW, NO_LEAD).desired > 10) is grows


def test_the_flap_guard_says_when_it_holds_a_scale_out() -> None:
    """A scale-out the usual band asks for, held by the guard, has the guard's words in the reason."""
    state = fleet(10, policy=POLICY, memory=AutoscaleMemory(actions=((NOW - 60.0, -3),)))
    held = autoscale(state, load(state, 8.0 * 1.15), NOW, NO_LEAD)
    assert held.desired == 10
    assert "flap guard: 60 s after a scale-in, a scale-out waits for 20% over target" in held.reason
