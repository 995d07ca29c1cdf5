"""The boot lead: size a lasting rise for the load it will have reached when new VMs are ready.

A scale-out sized for the load of now is a boot too small on a rise: by the time its VMs are
ready the load has moved on. So a rise that has lasted is projected forward by the lead (the
`boot_lead_percentile` of the measured waits, `boottimes`), by the lag of a windowed rate (its
mean trails a ramp by half the window), and by `scale_up_period_s`: the next scale-up can come
no sooner, so this one must carry the rise until that one's VMs are ready too (sized for the
lead alone, a steep ramp was followed one VM per period: more actions than with no lead).

Only a rise that has *lasted* is projected, never a single jump: a step in traffic reads, in a
windowed mean, as a ramp one window long, and extrapolating that ramp by a 20 s lead would size
a 2x burst as a 5x one (the step itself is `level.step_estimate`'s, which un-averages it and
stops there). Hence the test: the means of the last `TREND_BLOCKS` blocks of one window each
must rise block after block, which one step cannot do (it moves at most three consecutive
block means), and evenly (no rise above `EVEN_K` times the smallest: with noise, a step can
show a fourth small rise, never an even run), and the whole rise must stand `TREND_K` times
above the noise of block-to-block changes (`change_noise`). The rate projected is the smallest
block-to-block rise: a slowing ramp is not extrapolated at its steepest, and noise biases it
low, never high. Pure.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

from services.scaler.core.boottimes import Lead, lead
from services.scaler.core.level import spread, step_estimate
from services.scaler.core.liveness import lost_hosts
from services.scaler.core.model import FleetState, LoadView
from shared.contract.events import VmState
from shared.contract.policy import ScalingPolicy, Signal

TREND_BLOCKS = 5
"""Consecutive rising block means that make a lasting rise (one step can raise at most three in a row)."""
TREND_K = 5.0
"""The rise over those blocks must exceed this many times the noise of one block-to-block change."""
EVEN_K = 3.0
"""A lasting rise is even: no block-to-block rise above this many times the smallest (a step is one big one)."""
MIN_BLOCK_S = 5.0
"""The shortest block: signals read as they are (in-flight counts) still need a few points per block."""

Seen = Sequence[tuple[float, float]]


def lead_for(state: FleetState, share: float | None = None) -> Lead:
    """The wait the next scale-out faces: a resume where a pooled VM is there to take, else a boot.

    `share`: the percentile of the measured waits (the policy's `boot_lead_percentile` when None).
    """
    lost = lost_hosts(state)
    pooled = {vm.host for vm in state.vms.values()
              if vm.state is VmState.POOLED and vm.host and vm.name not in state.drains and vm.host not in lost}
    hosts = [host for host in state.hosts if host not in lost]
    return lead(state.boots, state.policy.boot_lead_percentile if share is None else share, pooled, hosts)


def block_means(seen: Seen, block_s: float, count: int | None = None) -> list[float | None]:
    """Mean demand per block of `block_s` seconds going back from the latest point, newest first.

    Only blocks the history covers whole are returned, at most `count` of them; a block without
    a point is None.
    """
    last, first = seen[-1][0], seen[0][0]
    whole = int((last - first) // block_s)
    whole = whole if count is None else min(whole, count)
    sums, counts = [0.0] * whole, [0] * whole
    for t, value in reversed(seen):
        k = int((last - t) // block_s)
        if k >= whole:
            break
        sums[k] += value
        counts[k] += 1
    return [s / c if c else None for s, c in zip(sums, counts, strict=True)]


def rise_per_s(seen: Seen, block_s: float) -> float:
    """The demand's lasting rise per second, or 0 when it is not rising block after block above its noise."""
    if len(seen) < 2 or block_s <= 0:
        return 0.0
    recent = block_means(seen, block_s, TREND_BLOCKS)
    if len(recent) < TREND_BLOCKS or any(m is None for m in recent):
        return 0.0
    rising = [m for m in reversed(recent) if m is not None]
    steps = [b - a for a, b in itertools.pairwise(rising)]
    if min(steps) <= 0 or max(steps) > EVEN_K * min(steps):
        return 0.0
    if rising[-1] - rising[0] <= TREND_K * change_noise(block_means(seen, block_s)):
        return 0.0
    return min(steps) / block_s


def change_noise(means: Sequence[float | None]) -> float:
    """The spread of block-to-block changes that is noise, not trend, from the second differences of `means`.

    A second difference (m[i] - 2 m[i-1] + m[i-2]) cancels a steady trend, and the onset of a
    ramp is one outlier among them, so the estimate neither takes a ramp's own slope for noise
    nor needs the ramp to fill half the history first. With independent block means it has
    sqrt(3) times the spread of a first difference. (A random walk's wanderings are its trend
    here: no local statistic tells them from a ramp, and the replay's noisy walk pays for that.)
    """
    seconds = [a - 2 * b + c for a, b, c in zip(means, means[1:], means[2:], strict=False)
               if a is not None and b is not None and c is not None]
    return spread(seconds) / math.sqrt(3)


def lead_factor(seen: Seen, ahead: Lead, policy: ScalingPolicy, load: LoadView) -> float:
    """How much more demand a lasting rise brings by the time the VMs of the scale-up after this one are ready.

    A factor on the latest demand (1: none): the rate times the lead, the window's lag and the
    scale-up period.
    Latency is left alone: it does not grow in proportion to the load, so no line through it
    says what the fleet will need.
    """
    if ahead.seconds <= 0 or policy.signal is Signal.P95_LATENCY or not seen or seen[-1][1] <= 0:
        return 1.0
    windowed = policy.signal is Signal.RPS
    rate = rise_per_s(seen, max(load.window_s if windowed else 1.0, MIN_BLOCK_S))
    if rate <= 0:
        return 1.0
    lag = load.window_s / 2 if windowed else 0.0
    return 1.0 + rate * (ahead.seconds + lag + policy.scale_up_period_s) / seen[-1][1]


def step_factor(seen: Seen, policy: ScalingPolicy, load: LoadView) -> float:
    """How much bigger the load is than its average shows: a step's estimate over the latest demand (1 if none).

    Only windowed rates hide a step (in-flight counts are read as they are); the look-ahead is
    capped at the load's own window, because that is all the averaging there is to undo.
    """
    latest = seen[-1][1]
    horizon = min(policy.scale_up_lookahead_s, load.window_s if policy.signal is Signal.RPS else 1.0)
    if latest <= 0:
        return 1.0
    window = load.window_s if policy.signal is Signal.RPS else 1.0
    return max(1.0, step_estimate(seen, horizon, window) / latest)


def project(seen: Seen, policy: ScalingPolicy, load: LoadView, observed: float, ahead: Lead) -> tuple[float, float]:
    """The per-VM value to size from without the boot lead, and with it.

    Above the scale-up trigger a burst's step is un-averaged (`step_factor`); a rise that has
    lasted is projected one lead ahead (`lead_factor`), trigger or not, so that its VMs are
    ready when the load arrives. With the lead, the larger of the two wins.
    """
    rising = observed > policy.target * (1 + policy.tolerance)
    plain = observed * step_factor(seen, policy, load) if rising else observed
    return plain, max(plain, observed * lead_factor(seen, ahead, policy, load))
