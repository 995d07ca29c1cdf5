"""The forecast's trigger: it scales out ahead of a rise its upper quantile sees, and floors a reactive scale-in."""

from __future__ import annotations

from services.scaler.core.autoscale import Outcome
from services.scaler.core.boottimes import Kind, Lead
from services.scaler.core.forecast import ForecastMemory, Point
from services.scaler.core.model import AutoscaleMemory, FleetState, Signals
from services.scaler.core.predict import combine
from shared.contract.policy import ForecastMode, ScalingPolicy, Signal

POLICY = ScalingPolicy(signal=Signal.RPS, target=70, min_replicas=1, max_replicas=100, forecast_mode=ForecastMode.ON)
LEAD = Lead(20.0, Kind.BOOT, "test")


def two_vms(point: float, upper: float) -> FleetState:
    """A fleet of 2 whose forecast says `point` (and `upper`) for the next 15 minutes."""
    curve = tuple(Point(m, point, upper) for m in range(15))
    return FleetState(desired=2, policy=POLICY, forecast=ForecastMemory(curve=curve), hosts={"h1": 10})


def held_at_two() -> Outcome:
    """The reactive side holds at 2, each VM at 67 req/s (inside the band)."""
    return Outcome(2, "reactive words", AutoscaleMemory(), Signals("rps", observed=67.0, target=70))


def test_a_point_rise_over_the_trigger_scales_out_to_the_upper_value() -> None:
    """Point 200 req/s (over 2 x 77), upper 230: a scale-out to 4 (230 / 70), ahead of the rise."""
    out, _ = combine(two_vms(200.0, 230.0), held_at_two(), 0.0, LEAD)
    assert out.desired == 4 and "scale out ahead of the forecast rise" in out.reason


def test_an_upper_quantile_more_than_one_vm_over_the_trigger_scales_out() -> None:
    """Point 135 req/s (under the trigger), upper 240 (4 VMs' worth under it, 2 more than the fleet): out to 4."""
    out, _ = combine(two_vms(135.0, 240.0), held_at_two(), 0.0, LEAD)
    assert out.desired == 4 and "scale out ahead of the forecast rise" in out.reason


def test_the_upper_value_still_floors_a_scale_in() -> None:
    """A reactive scale-in from 4 to 2 lands on 3 when the upper value (160 req/s) needs 3 under the trigger."""
    state = FleetState(desired=4, policy=POLICY, forecast=two_vms(135.0, 160.0).forecast, hosts={"h1": 10})
    out, _ = combine(state, Outcome(2, "reactive words", AutoscaleMemory(), Signals("rps", observed=30.0, target=70)),
                     0.0, LEAD)
    assert out.desired == 3
