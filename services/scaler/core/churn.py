"""The churn budget: at most `max_actions_per_hour` scale actions and `max_flaps_per_hour` flaps per rolling hour.

Every action costs something outside the scaler (a boot, a drain, connections moved, a line in
somebody's alert channel), and a flap (a scale the other way within `FLAP_WINDOW_S` of the
last one, as the replay bench counts them) is an action that undid the previous one. The
budget refills as actions age out of the rolling hour. More than half of it spent inside the
hour is the sign that it goes faster than it comes back: from there the bands widen, linearly
up to `WIDEN_MAX` times the policy's tolerances at the hold point, so the moves get fewer and
larger. At the hold point (a tenth of the actions left, kept for scale-outs, or one flap short
of the flap limit) scale-ins hold: a scale-in is never urgent, and it is what the next
scale-out would flap against.

Availability comes first: a scale-out is never held outright. Its band widens too, but never
beyond `UP_TOLERANCE_CAP` above target (unless the policy's own band is wider), so by default a
scale-out still fires once the load is 20% over target, still under a VM's capacity when the
target leaves it the usual headroom (70 of 100 rps: 84); burst sizing and the boot lead are
untouched.

The flap guard (`guard`) is the budget's cheapest saving: a scale-out that would reverse a
scale-in inside the flap window fires only above `flap_guard_tolerance` (20%) over target, not
the usual 10%. A scale-in lands where the window's peak fitted, so a load that comes back to
that peak with a little noise crosses the usual trigger; the 30% between the target and a VM's
capacity (70 of 100 rps) serves that re-rise, and a burst above the guard still scales out.

The defaults (60 actions, 6 flaps) never bind on a calm fleet: no replay run widens or holds
(the busiest spends about 7 actions and 3 flaps in 4 hours). Pure.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from shared.contract.policy import ScalingPolicy

HOUR_S = 3600.0
FLAP_WINDOW_S = 300.0
"""A reversal this soon after the previous action is a flap (`scale_down_after_up_s`'s default, the bench's)."""
WIDEN_FROM = 0.5
"""Share of a budget spent within the hour at which the bands start to widen."""
WIDEN_MAX = 2.0
"""The bands' widening at the reserve: twice the policy's tolerances."""
UP_TOLERANCE_CAP = 0.2
"""The scale-up band never widens past this (a scale-out then fires at 1.2 x target), unless the policy's is wider."""
DOWN_TOLERANCE_CAP = 0.6
"""The scale-in band (and the share a scale-in must free) never widens past this."""

Actions = tuple[tuple[float, int], ...]


@dataclass(frozen=True)
class Budget:
    """What the last hour spent, and what that makes of the bands: a factor, a scale-in hold, and words."""

    actions: int = 0
    flaps: int = 0
    widen: float = 1.0
    hold_in: bool = False
    words: str = ""

    def bands(self, policy: ScalingPolicy) -> ScalingPolicy:
        """The policy with its tolerances widened by this budget (the same policy while nothing widens)."""
        if self.widen <= 1.0:
            return policy
        up = min(policy.tolerance * self.widen, max(policy.tolerance, UP_TOLERANCE_CAP))
        down = min(policy.scale_down_tolerance * self.widen, max(policy.scale_down_tolerance, DOWN_TOLERANCE_CAP))
        return policy.model_copy(update={"tolerance": up, "scale_down_tolerance": down})


def span(policy: ScalingPolicy) -> float:
    """How much action history the budget reads: the hour and one flap window before it (0 when off)."""
    on = policy.max_actions_per_hour > 0 or policy.max_flaps_per_hour > 0
    return HOUR_S + FLAP_WINDOW_S if on else 0.0


def flaps(actions: Actions, since: float) -> int:
    """Actions after `since` that reversed the one before them within `FLAP_WINDOW_S`."""
    return sum(1 for (t0, d0), (t1, d1) in itertools.pairwise(actions)
               if t1 > since and (d0 > 0) != (d1 > 0) and t1 - t0 < FLAP_WINDOW_S)


def would_flap(actions: Actions, now: float, delta: int) -> bool:
    """Whether an action of `delta` now would reverse the last one within `FLAP_WINDOW_S`."""
    if not actions or delta == 0:
        return False
    last_at, last = actions[-1]
    return (last > 0) != (delta > 0) and now - last_at < FLAP_WINDOW_S


def guard(bands: ScalingPolicy, policy: ScalingPolicy, actions: Actions, now: float) -> tuple[ScalingPolicy, str]:
    """The bands, with the scale-up band widened to `flap_guard_tolerance` while a scale-out would be a flap,
    and words saying so ("" when it does not widen).

    A flap is the action the budget counts worst, and the guard costs nothing off the flap window.
    """
    wide = policy.flap_guard_tolerance
    if wide <= bands.tolerance or not would_flap(actions, now, 1):
        return bands, ""
    ago = now - actions[-1][0]
    words = f"flap guard: {ago:.0f} s after a scale-in, a scale-out waits for {wide:.0%} over target"
    return bands.model_copy(update={"tolerance": wide}), words


def limits(limit: int, keep: int) -> tuple[float, int]:
    """Where a budget of `limit` starts widening the bands and where it holds scale-ins (`keep` left)."""
    hold = max(1, limit - keep)
    return min(limit * WIDEN_FROM, hold - 1), hold


def _spent(used: int, limit: int, keep: int) -> tuple[float, bool]:
    """How far a budget is from widening (0) to its hold (1), and whether it holds; (0, False) when off."""
    if limit <= 0:
        return 0.0, False
    start, hold = limits(limit, keep)
    return max(0.0, (used - start) / (hold - start)), used >= hold


def budget(actions: Actions, policy: ScalingPolicy, now: float) -> Budget:
    """The churn budget now, from the autoscaler's own actions (time, signed size change), oldest first.

    Scale-ins hold with a tenth of the actions left (kept for scale-outs; none below 10 an
    hour) or one flap short of the flap limit: a scale-in is what the next scale-out flaps against.
    """
    a_limit, f_limit = policy.max_actions_per_hour, policy.max_flaps_per_hour
    if a_limit <= 0 and f_limit <= 0:
        return Budget()
    since = now - HOUR_S
    used = sum(1 for t, _ in actions if t > since)
    flapped = flaps(actions, since)
    a_share, a_hold = _spent(used, a_limit, a_limit // 10)
    f_share, f_hold = _spent(flapped, f_limit, 1)
    share, hold = max(a_share, f_share), a_hold or f_hold
    if share <= 0:
        return Budget(used, flapped)
    widen = 1.0 + (WIDEN_MAX - 1.0) * min(1.0, share)
    return Budget(used, flapped, widen, hold, _words(used, flapped, policy, widen, hold))


def _words(used: int, flapped: int, policy: ScalingPolicy, widen: float, hold: bool) -> str:
    """E.g. "churn budget: 58 of 60 actions this hour: holding scale-in"."""
    spent = []
    if policy.max_actions_per_hour > 0:
        spent.append(f"{used} of {policy.max_actions_per_hour} actions")
    if policy.max_flaps_per_hour > 0 and flapped:
        spent.append(f"{flapped} of {policy.max_flaps_per_hour} flaps")
    act = f"holding scale-in (bands widened x{widen:.3g})" if hold else f"bands widened x{widen:.3g}"
    return f"churn budget: {' and '.join(spent)} this hour: {act}"
