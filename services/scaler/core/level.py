"""What the load history says: its noise, a step hidden in an average, and where a scale-in may land.

All of it reads `seen`, the (time, demand) pairs of recent evaluations, where demand is the
fleet-wide amount of the signal (total requests/s, total outstanding; for latency, per-VM
latency x VMs). Totals do not jump when a VM joins or leaves, so a change in them is a change
in the load, not in the fleet.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

from shared.contract.policy import ScalingPolicy

Seen = Sequence[tuple[float, float]]

NOISE_K = 5.0
"""A one-evaluation jump reads as a step in the load only above this many times the jumps' own spread."""
MARGIN_K = 3.0
"""A scale-in lands where the level's peak plus this many times the noise stays under the scale-up trigger."""
MIN_NOISE_SAMPLES = 10


def spread(values: Sequence[float]) -> float:
    """A robust standard deviation (1.4826 x the median absolute deviation): one outlier does not move it."""
    if len(values) < MIN_NOISE_SAMPLES:
        return math.inf
    ordered = sorted(values)
    median = ordered[len(ordered) // 2]
    deviations = sorted(abs(v - median) for v in values)
    return 1.4826 * deviations[len(deviations) // 2]


def step_estimate(seen: Seen, horizon_s: float, window_s: float) -> float:
    """The latest demand, or, after a jump that stands out of the noise, the step that jump implies.

    A windowed rate moves by 1/W of a step in traffic per second of a W-second window, so a
    jump j between two evaluations means the traffic itself moved by about j x W. Reading it
    that way sizes the fleet for a burst in its first second instead of over the window. The
    step is added to the demand one window back (before the step began), not to the latest
    demand: later seconds of the same ramp pass the noise gate too, and adding the whole step
    to a mean that has already taken part of it would overshoot by up to that part.
    """
    latest = seen[-1][1]
    if len(seen) < 2 or horizon_s <= 0:
        return latest
    (t0, before), (t1, _) = seen[-2], seen[-1]
    jumps = [b - a for (_, a), (_, b) in itertools.pairwise(seen)]
    jump = latest - before
    if t1 <= t0 or jump <= NOISE_K * spread(jumps[:-1]):
        return latest
    per_s = jump / (t1 - t0)
    return max(latest, min(latest + per_s * horizon_s, _at_or_before(seen, t1 - window_s, before) + per_s * window_s))


def _at_or_before(seen: Seen, when: float, default: float) -> float:
    """The demand seen last at or before `when` (`default` when the history does not reach back so far)."""
    earlier = [value for t, value in seen if t <= when]
    return earlier[-1] if earlier else default


def _levels(seen: Seen, span_s: float) -> list[float]:
    """Each point's level: the mean demand over the `span_s` seconds up to it (a running mean)."""
    out, total, start = [], 0.0, 0
    for i, (t, value) in enumerate(seen):
        total += value
        while seen[start][0] <= t - span_s and start < i:
            total -= seen[start][1]
            start += 1
        out.append(total / (i - start + 1))
    return out


def landing(seen: Seen, policy: ScalingPolicy, since: float) -> int:
    """The smallest size whose tolerance band holds the level's peak since `since`, plus its noise.

    Sizing a scale-in by the window's peak level keeps what the window saw servable; keeping
    that peak plus MARGIN_K x the noise below `target x (1 + tolerance)` (the scale-up trigger)
    is what stops the next noisy second from scaling straight back out (a flap). The peak
    itself need not sit at or under target: a size whose per-VM load is inside the band is
    one the tracker would hold, so it is as good a recommendation as the HPA's.
    """
    levels = _levels(seen, max(policy.scale_down_settle_s, 1e-9))
    inside = [(level, value) for (t, value), level in zip(seen, levels, strict=True) if t >= since]
    peak = max(level for level, _ in inside)
    noise = math.sqrt(sum((value - level) ** 2 for level, value in inside) / len(inside))
    need = (peak + MARGIN_K * noise) / (policy.target * (1 + policy.tolerance))
    return math.ceil(need - 1e-9)


def scale_in_size(seen: Seen, policy: ScalingPolicy, now: float, current: int) -> tuple[int, str]:
    """Where a scale-in lands now, or `current` and why not yet, in words ("" when it lands).

    It waits for a whole window (plus the settle time) of history; lands where `landing` says;
    acts only when that frees at least `scale_down_tolerance` of the fleet (each action is one
    worth taking; on a small fleet this can keep one VM more than the load needs); and holds
    while the peak is still leaving the window (the landing over a window `scale_down_settle_s`
    longer would differ), so one burst gives one scale-in. The words are what `quicfleet status`
    shows, since "why does it not scale in?" is the question an operator asks.
    """
    window, settle = policy.scale_down_stabilization_s, policy.scale_down_settle_s
    have = now - seen[0][0] if seen else 0.0
    if have < window + settle:
        return current, f"scale-in waits for {window + settle:g} s of load history (has {have:.0f} s)"
    size = landing(seen, policy, now - window)
    if size > math.floor(current * (1 - policy.scale_down_tolerance) + 1e-9):
        freed = max(0, current - size) / current
        return current, (f"the window's peak needs {size}: that frees {freed:.0%},"
                         f" under scale_down_tolerance {policy.scale_down_tolerance:.0%}")
    if settle and landing(seen, policy, now - window - settle) != size:
        return current, "scale-in waits while the window's peak is leaving it"
    return size, ""
