"""The replay bench's day-long trace and its warm pool model: shapes, billing, and what `decide()` makes of them."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from bench._traces import DAY_S, STEP_RISE_S, daily, day_curve, step_factor, steps, trace
from bench.scaler_replay import AFTER, POLICY, meets, total
from bench.simulate import DecideController, FleetModel, SimFleet, Tally, replay
from services.scaler.core.boottimes import Kind

MODEL = FleetModel(capacity_rps=100.0, boot_s=15.0, resume_s=3.0, hosts=2)


@pytest.mark.parametrize(("t", "expected"), [
    (99.0, 1.0), (100.0, 1.0), (105.0, 1.5), (110.0, 2.0), (500.0, 2.0), (1010.0, 1.5), (1020.0, 1.0), (2000.0, 1.0),
])
def test_a_sharp_step_rises_holds_and_falls_back(t: float, expected: float) -> None:
    """A 2x step starting at 100 s rises over 10 s, holds until 1000 s, and is gone 20 s later."""
    assert step_factor(t, (100.0, 10.0, 2.0, 900.0, 20.0)) == pytest.approx(expected)


def test_a_day_has_a_few_sharp_steps() -> None:
    """Three to five steps per day, each rising within seconds (5-30 s) and lasting 10-60 minutes."""
    for seed in range(20):
        planned = steps(DAY_S, random.Random(seed))
        assert 3 <= len(planned) <= 5
        assert all(STEP_RISE_S[0] <= rise <= STEP_RISE_S[1] and 600 <= length <= 3600
                   for _, rise, _, length, _ in planned)


def test_the_daily_trace_is_a_day_of_diurnal_traffic_and_reproducible() -> None:
    """A day long, same seed same trace, its night quieter than its evening peak, never negative."""
    day = trace("daily", 7)
    assert len(day) == DAY_S and day == daily(DAY_S, 7) and day != daily(DAY_S, 8)
    assert min(day) >= 0
    night, evening = statistics.mean(day[3 * 3600: 5 * 3600]), statistics.mean(day[20 * 3600: 21 * 3600])
    assert night < 0.4 * evening
    assert day_curve(4 * 3600) < day_curve(11.5 * 3600) < day_curve(20.5 * 3600)


def test_the_wobble_moves_the_load_over_minutes() -> None:
    """Minute means of the quiet night wander by a few percent (the per-second noise alone averages out)."""
    day, planned = daily(DAY_S, 11), steps(DAY_S, random.Random(11))  # the trace plans its steps first

    def shape(t: int) -> float:
        return day_curve(t) * math.prod(step_factor(t, step) for step in planned)

    minutes = [statistics.mean(day[m * 60 + s] / shape(m * 60 + s) for s in range(60)) for m in range(120, 300)]
    assert 0.03 < statistics.pstdev(minutes) < 0.1


def test_a_create_resumes_a_paused_pool_vm_and_else_boots() -> None:
    """A paused VM on h1 is resumed by a create there (ready after resume_s); one still booting is not taken."""
    fleet = SimFleet(MODEL)
    fleet.fill(0.0, "h1", "s-e0-p1")
    fleet.create(10.0, "h1", "s-e0-c2")
    assert [vm.ready_at for vm in fleet.vms] == [25.0] and len(fleet.pool) == 1  # still booting: not taken
    fleet = SimFleet(MODEL)
    fleet.fill(0.0, "h1", "s-e0-p1")
    fleet.create(20.0, "h1", "s-e0-c2")
    fleet.create(20.0, "h1", "s-e0-c3")
    assert [vm.ready_at for vm in fleet.vms] == [23.0, 35.0] and fleet.pool == []


def _steady(policy: object, seconds: int = 120) -> tuple[Tally, DecideController]:
    controller = DecideController(AFTER, 8, hosts=MODEL.hosts) if policy is AFTER else DecideController(POLICY, 8)
    return replay([500.0] * seconds, controller, MODEL, 8), controller


def test_the_pool_is_filled_per_host_and_billed_apart() -> None:
    """pool_size 1 on two hosts: two VMs boot for the pool, then pause; their hours are pool hours, not running ones."""
    tally, controller = _steady(AFTER)
    assert tally.vm_seconds == 8 * 120
    assert 2 * 100 < tally.pool_seconds <= 2 * 120
    assert controller.state.boots.samples == {("h0", Kind.BOOT): (15.0,), ("h1", Kind.BOOT): (15.0,)}
    assert _steady(POLICY)[0].pool_seconds == 0


def test_a_burst_is_served_from_the_pool_in_seconds() -> None:
    """A step from 400 to 900 rps: with the pool fewer requests exceed capacity, and the resume is measured."""
    load = [400.0] * 200 + [900.0] * 200
    before = replay(load, DecideController(POLICY, 6, hosts=4), FleetModel(hosts=4), 6)
    controller = DecideController(AFTER, 6, hosts=4)
    after = replay(load, controller, FleetModel(hosts=4), 6)
    assert after.requests_over < 0.5 * before.requests_over
    resumes = [s for (_, kind), values in controller.state.boots.samples.items() if kind is Kind.RESUME for s in values]
    assert resumes and set(resumes) == {3.0}


def _ramp(per_s: float, seed: int = 1) -> list[float]:
    """400 s at 500 rps, a ramp of `per_s` to 2500 rps, then 300 s there; 5% noise."""
    rng = random.Random(seed)
    seconds = 400 + int(2000 / per_s) + 300
    return [min(2500.0, 500.0 + per_s * max(0, t - 400)) * rng.gauss(1, 0.05) for t in range(seconds)]


def test_the_lead_meets_a_steep_ramp_with_fewer_scale_outs_and_fewer_requests_lost() -> None:
    """An 8 rps/s ramp, no pool, three seeds: with the boot lead fewer actions and at most 60% of the requests lost."""
    model, led, plain = FleetModel(hosts=4), Tally(), Tally()
    for seed in (2, 3, 4):
        load = _ramp(8.0, seed)
        one = replay(load, DecideController(POLICY.model_copy(update={"boot_lead_percentile": 0.9}), 8, 4), model, 8)
        other = replay(load, DecideController(POLICY, 8, 4), model, 8)
        led = total([led, one])
        plain = total([plain, other])
    assert led.actions < plain.actions and led.flaps == plain.flaps == 0
    assert led.requests_over <= 0.6 * plain.requests_over


def test_the_target_check_names_each_miss() -> None:
    """Flaps, actions, requests above capacity and running VM-hours are each checked against the HPA's."""
    hpa = Tally(actions=10, flaps=1, requests_over=100.0, vm_seconds=3600.0)
    assert meets(Tally(actions=5, requests_over=50.0, vm_seconds=3600.0), hpa) == []
    assert meets(Tally(actions=6, flaps=1, requests_over=51.0, vm_seconds=3601.0), hpa) == [
        "1 flaps", "actions 0.60", "req-over 0.51", "VM-h 1.00"]


def test_the_multi_day_shapes_repeat_on_weekdays_and_break_on_the_holiday() -> None:
    """The office's 09:05 job load is the same on two weekdays and gone on the holiday; the week grows 1% a day."""
    from bench._weeks import HOLIDAY, office_shape, week_shape

    job = 9 * 3600 + 300
    assert office_shape(1 * DAY_S + job) == pytest.approx(office_shape(2 * DAY_S + job))
    assert office_shape(HOLIDAY * DAY_S + job) < 0.3 * office_shape(2 * DAY_S + job)
    assert week_shape(8 * 3600 + 1 * DAY_S) == pytest.approx(1.01 * week_shape(8 * 3600), rel=1e-9)
