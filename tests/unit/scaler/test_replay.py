"""Replay of a recorded load trace (ramp, plateau, spike, fall) through `decide()` on the fleet model."""

from __future__ import annotations

import math
from pathlib import Path

from bench.simulate import DecideController, FleetModel, Tally, replay
from shared.contract.policy import ScalingPolicy, Signal

TRACE = Path(__file__).parent / "traces" / "ramp_plateau_spike_fall.csv"
SPIKE_END = 660


def _trace() -> list[float]:
    return [float(line) for line in TRACE.read_text().splitlines() if line and not line.startswith("#")]


def _run() -> tuple[list[float], Tally]:
    trace = _trace()
    policy = ScalingPolicy(signal=Signal.RPS, target=70, min_replicas=2, max_replicas=40)
    return trace, replay(trace, DecideController(policy, 2), FleetModel(capacity_rps=100, boot_s=15), 2)


def test_replay_takes_a_fixed_number_of_actions_without_flapping() -> None:
    """The recorded trace gives 9 scale-ups (8 on the ramp, 1 for the spike) and 3 scale-downs, and no flap."""
    _, tally = _run()
    ups = [t for t, d in tally.changes if d > 0]
    downs = [t for t, d in tally.changes if d < 0]
    assert (len(ups), len(downs)) == (9, 3)
    assert tally.flaps == 0


def test_replay_scales_in_only_after_the_window_and_ends_right_sized() -> None:
    """No VM leaves within 300 s of the spike's end, and the fleet ends at most one VM above the floor's need.

    One above, not exact: a scale-in must free `scale_down_tolerance` (30%) of the fleet, and 4 -> 3 frees 25%.
    """
    trace, tally = _run()
    downs = [t for t, d in tally.changes if d < 0]
    assert min(downs) >= SPIKE_END + 300
    need = math.ceil(sum(trace[-60:]) / 60 / 70)
    assert need <= tally.sizes[-1] <= need + 1


def _bursts(second_at: int | None) -> list[float]:
    """400 rps for half an hour with a 3x burst of 100 s at 200 s, and another at `second_at` when given."""
    trace = [400.0] * 1800
    for start in (200, second_at):
        if start is not None:
            trace[start:start + 100] = [1200.0] * 100
    return trace


def test_holding_scale_outs_after_a_scale_in_trades_the_flap_for_requests_over_capacity() -> None:
    """The frontier's what-if (no scale-out for 300 s after a scale-in) turns a burst's flap into requests over
    capacity."""
    policy = ScalingPolicy(signal=Signal.RPS, target=70, min_replicas=2, max_replicas=40)
    model = FleetModel(capacity_rps=100, boot_s=15)
    scale_in = min(t for t, d in replay(_bursts(None), DecideController(policy, 6), model, 6).changes if d < 0)
    trace = _bursts(int(scale_in) + 60)
    plain = replay(trace, DecideController(policy, 6), model, 6)
    held = replay(trace, DecideController(policy, 6, hold_out_after_in_s=300), model, 6)
    assert plain.flaps >= 1 and held.flaps == 0
    assert not [t for t, d in held.changes if d > 0 and scale_in < t < scale_in + 300]
    assert held.requests_over > plain.requests_over
