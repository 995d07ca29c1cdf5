"""The load-history estimators in `services.scaler.core.level`: step sizing and scale-in landing."""

from __future__ import annotations

import pytest

from services.scaler.core.level import landing, scale_in_size, step_estimate
from shared.contract.policy import ScalingPolicy, Signal

WINDOW = 10


def _windowed(raw: list[float]) -> list[tuple[float, float]]:
    """What a metrics pipeline reports each second: the mean of the last WINDOW raw seconds."""
    out = []
    for t in range(len(raw)):
        seen = raw[max(0, t - WINDOW + 1): t + 1]
        out.append((float(t), sum(seen) / len(seen)))
    return out


def _step_trace(before: float, after: float, at: int, length: int) -> list[float]:
    """A steady rate with a small alternating wobble that steps from `before` to `after` at second `at`."""
    return [(before if t < at else after) + (t % 2) for t in range(length)]


def test_step_estimate_reads_the_whole_step_in_its_first_second() -> None:
    """One second into a 600 -> 2000 step, a 10 s mean has moved 140, and the estimate is the new rate."""
    seen = _windowed(_step_trace(600.0, 2000.0, 60, 61))
    assert seen[-1][1] < 800
    assert step_estimate(seen, WINDOW, WINDOW) == pytest.approx(2000.0, rel=0.01)


@pytest.mark.parametrize("into", range(1, WINDOW))
def test_step_estimate_does_not_overshoot_later_in_the_same_ramp(into: int) -> None:
    """Each later second of the averaged ramp still reads as the same step, never as a step on top of it."""
    seen = _windowed(_step_trace(600.0, 2000.0, 60, 61 + into))
    assert step_estimate(seen, WINDOW, WINDOW) == pytest.approx(2000.0, rel=0.01)


def test_step_estimate_ignores_jumps_inside_the_noise() -> None:
    """Without a jump that stands out of the wobble, the estimate is the latest demand."""
    seen = _windowed(_step_trace(600.0, 600.0, 0, 80))
    assert step_estimate(seen, WINDOW, WINDOW) == seen[-1][1]


def test_landing_keeps_the_peak_inside_the_band_not_at_target() -> None:
    """A steady 635/s at a 70/s target lands on 9 VMs (70.6 each, inside the 10% band), not on 10."""
    policy = ScalingPolicy(signal=Signal.RPS, target=70, max_replicas=50)
    seen = [(float(t), 635.0) for t in range(400)]
    assert landing(seen, policy, 100.0) == 9


def test_landing_leaves_room_for_the_noise_under_the_trigger() -> None:
    """The same mean with a wide wobble needs more VMs: its peak plus three times the noise stays under 77/s each."""
    policy = ScalingPolicy(signal=Signal.RPS, target=70, max_replicas=50)
    quiet = [(float(t), 635.0) for t in range(400)]
    noisy = [(float(t), 635.0 + (60.0 if t % 2 else -60.0)) for t in range(400)]
    assert landing(noisy, policy, 100.0) > landing(quiet, policy, 100.0)


def test_scale_in_says_why_it_holds_and_lands_when_it_may() -> None:
    """A held scale-in names what it waits for (history, a step worth taking); one that may act says nothing."""
    policy = ScalingPolicy(signal=Signal.RPS, target=70, max_replicas=50)
    short = [(float(t), 600.0) for t in range(100)]
    assert scale_in_size(short, policy, 99.0, 20) == (20, "scale-in waits for 310 s of load history (has 99 s)")
    steady = [(float(t), 600.0) for t in range(400)]
    size, why = scale_in_size(steady, policy, 399.0, 9)
    assert size == 9 and "peak needs 8: that frees 11%, under scale_down_tolerance 30%" in why
    assert scale_in_size(steady, policy, 399.0, 20) == (8, "")
