"""Replay of a recorded load trace (ramp, plateau, spike, fall) through `decide()` on the fleet model."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from services.scaler.simulate import DecideController, FleetModel, Tally, replay
from shared.contract.policy import ScalingPolicy, Signal

pytestmark = pytest.mark.unit

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
