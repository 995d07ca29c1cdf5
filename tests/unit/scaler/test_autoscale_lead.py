"""The boot lead: a rise that has lasted is sized for the load one measured boot (or resume) ahead."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from services.scaler.core.ahead import lead_factor, lead_for, rise_per_s
from services.scaler.core.autoscale import autoscale, witness
from services.scaler.core.boottimes import NO_LEAD, BootTimes, Kind, Lead, record
from services.scaler.core.decide import decide
from services.scaler.core.model import FleetState, LoadView, VmLoadView, VmView
from shared.contract.events import VmState
from shared.contract.policy import ScalingPolicy, Signal
from tests.unit.scaler.fleets import NOW, fleet

WINDOW = 10.0
POLICY = ScalingPolicy(signal=Signal.RPS, target=70, max_replicas=40)
BOOT = Lead(20.0, Kind.BOOT, "test")


def _windowed(raw: list[float]) -> list[tuple[float, float]]:
    """The demand history a metrics window of WINDOW seconds makes of per-second rates."""
    w = int(WINDOW)
    return [(float(t), sum(raw[max(0, t - w + 1): t + 1]) / len(raw[max(0, t - w + 1): t + 1]))
            for t in range(len(raw))]


def _noisy(values: list[float], share: float = 0.05, seed: int = 3) -> list[float]:
    rng = random.Random(seed)
    return [v * rng.gauss(1, share) for v in values]


FLAT = [1000.0] * 300
RAMP = [1000.0] * 150 + [1000.0 + 3.0 * t for t in range(150)]
FALL = [2000.0] * 150 + [2000.0 - 3.0 * t for t in range(150)]


@pytest.mark.parametrize(("raw", "low", "high"), [
    (_noisy(FLAT), 0.0, 0.0),
    (_noisy(RAMP, 0.02), 1.5, 3.1),
    (RAMP, 2.9, 3.1),
    (_noisy(FALL), 0.0, 0.0),
    (_noisy(RAMP)[-40:], 0.0, 0.0),
])
def test_a_rise_counts_only_when_it_lasts_above_the_noise(raw: list[float], low: float, high: float) -> None:
    """Noise, a fall or too short a history read no rise; a ramp of 3/s reads 3, less under noise (never more)."""
    assert low <= rise_per_s(_windowed(raw), WINDOW) <= high


@pytest.mark.parametrize("factor", [1.5, 2.0, 4.0])
def test_a_step_is_never_extrapolated(factor: float) -> None:
    """Every second after a sudden step, the rise read is at most a sliver of the step (the burst sizing has it)."""
    raw = _noisy([1000.0] * 200 + [1000.0 * factor] * 100)
    seen = _windowed(raw)
    worst = max(rise_per_s(seen[: t + 1], WINDOW) for t in range(200, 300))
    assert worst * (BOOT.seconds + WINDOW / 2) <= 0.1 * 1000 * (factor - 1)


def _load(at: float, rps: float, vms: int = 10) -> LoadView:
    return LoadView(at=at, rps=rps, vms={f"vm{i}": VmLoadView(rps=rps / vms) for i in range(vms)}, window_s=WINDOW)


@pytest.mark.parametrize(("ahead", "policy", "expected"), [
    (NO_LEAD, POLICY, 1.0),
    (BOOT, POLICY.model_copy(update={"signal": Signal.P95_LATENCY, "target": 0.2}), 1.0),
    (BOOT, POLICY, 1.0 + 3.0 * (20 + 5 + 15) / 1447.0),
    (Lead(3.0, Kind.RESUME), POLICY, 1.0 + 3.0 * (3 + 5 + 15) / 1447.0),
    (BOOT, POLICY.model_copy(update={"scale_up_period_s": 0}), 1.0 + 3.0 * (20 + 5) / 1447.0),
])
def test_the_lead_factor_projects_the_rise_past_the_lead_the_lag_and_the_period(
    ahead: Lead, policy: ScalingPolicy, expected: float,
) -> None:
    """rate x (lead + window / 2 + scale-up period) over the latest demand: none without a lead, none for latency."""
    seen = _windowed(RAMP)
    got = lead_factor(seen, ahead, policy, _load(seen[-1][0], seen[-1][1]))
    assert got == pytest.approx(expected, rel=0.01)


def _ramped(policy: ScalingPolicy, per_vm_end: float = 74.0, seconds: int = 160) -> tuple[FleetState, LoadView]:
    """10 warm VMs that saw flat load at 60 rps each, then a ramp to `per_vm_end`, ending at NOW."""
    state = fleet(10, policy=policy)
    flat = seconds - 70
    raw = _noisy([600.0] * flat + [600.0 + (per_vm_end * 10 - 600.0) * t / 70 for t in range(70)], 0.01)
    load = _load(NOW, 0.0)
    for (t, mean) in _windowed(raw):
        load = _load(NOW - seconds + 1 + t, mean)
        state = witness(state, load, load.at)
    return state, load


def test_a_lasting_rise_scales_out_before_the_trigger_with_the_lead_in_the_reason() -> None:
    """At 74 rps per VM (trigger 77) and rising 2/s per VM, the 20 s lead asks for VMs now, and says so."""
    state, load = _ramped(POLICY)
    led = autoscale(state, load, NOW, BOOT)
    plain = autoscale(state, load, NOW, NO_LEAD)
    assert plain.desired == 10 and "(hold)" in plain.reason
    assert led.desired > 10
    assert "boot lead 20 s (test): a lasting rise sized +" in led.reason


def test_the_lead_alone_never_reverses_a_recent_scale_in() -> None:
    """Two minutes after a scale-in the same projection waits and says so; the load over the trigger would not."""
    state, load = _ramped(POLICY.model_copy(update={"flap_guard_tolerance": 0.0}))  # the lead's own rule, unguarded
    after_in = replace(state, memory=replace(state.memory, actions=((NOW - 120.0, -3),)))
    held = autoscale(after_in, load, NOW, BOOT)
    assert held.desired == 10
    assert "boot lead 20 s waits: a scale-out now would reverse the last scale-in" in held.reason
    hot = _load(NOW + 1, 10 * 80.0)
    assert autoscale(witness(after_in, hot, NOW + 1), hot, NOW + 1, BOOT).desired > 10


def test_the_lead_follows_the_measured_boots() -> None:
    """Without a lead given, the state's record decides: a measured 60 s boot asks for more than a 5 s one."""
    state, load = _ramped(POLICY)
    quick = replace(state, boots=record(BootTimes(), "h1", Kind.BOOT, 5.0), hosts={"h1": 40})
    slow = replace(quick, boots=record(BootTimes(), "h1", Kind.BOOT, 60.0))
    assert (lead_for(quick).seconds, lead_for(slow).seconds) == (5.0, 60.0)
    assert 10 < autoscale(quick, load, NOW).desired < autoscale(slow, load, NOW).desired
    off = replace(slow, policy=POLICY.model_copy(update={"boot_lead_percentile": 0.0}))
    assert autoscale(off, load, NOW).desired == 10


def test_a_pooled_vm_makes_the_lead_a_resume() -> None:
    """With a VM paused in the pool the next scale-out is a resume: the 3 s default, not the 20 s boot."""
    state, load = _ramped(POLICY)
    pooled = VmView(name="p1", state=VmState.POOLED, since=0.0, created=0.0, host="h1", request_id="s-e1-p1")
    with_pool = replace(state, vms=dict(state.vms) | {"p1": pooled}, hosts={"h1": 20})
    assert (lead_for(with_pool).kind, lead_for(with_pool).seconds) == (Kind.RESUME, 3.0)
    assert (lead_for(state).kind, lead_for(state).seconds) == (Kind.BOOT, 20.0)
    assert decide(state, load, NOW).desired > 10
    assert decide(with_pool, load, NOW).desired == 10


def test_no_lead_leaves_a_steady_fleet_alone() -> None:
    """Flat load inside the band: the lead has no rise to project, the size holds."""
    state, load = _ramped(POLICY, per_vm_end=60.0)
    assert autoscale(state, load, NOW, BOOT).desired == 10
