"""Target tracking with a dead band, stabilization windows, rate limits and a cooldown.

The shape follows the Kubernetes HPA (desired = ceil(n x observed / target), the highest
recommendation over the scale-down window), with two changes that matter on a VM fleet:
VMs still booting or warming count as capacity but their load is left out (a booting VM
has no load yet, which would otherwise read as "the fleet is idle"), and a missing or
stale load snapshot holds the size: no data is never a reason to scale down.

Two more inputs shape a scale: the boot lead (`ahead`: a rise that has lasted is sized for
the load it will have reached when the VMs are ready) and the churn budget (`churn`: bands
widen as an hour's actions and flaps are spent, scale-ins hold at its end, and a scale-out
that would reverse a recent scale-in waits for a wider band: the flap guard).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TypeVar

from services.scaler.core.ahead import lead_for, project
from services.scaler.core.boottimes import Lead
from services.scaler.core.churn import Budget, budget, guard, would_flap
from services.scaler.core.churn import span as churn_span
from services.scaler.core.level import scale_in_size
from services.scaler.core.model import CAPACITY_STATES, AutoscaleMemory, FleetState, LoadView, Signals, VmView
from services.scaler.core.reading import demand, fleet_total, observe
from shared.contract.events import VmState
from shared.contract.policy import ScalingPolicy, Signal

T = TypeVar("T")

NOISE_SPAN_S = 60.0
"""The least load history kept, so the step detector knows how much the signal wobbles on its own."""


@dataclass(frozen=True)
class Outcome:
    """The autoscaler's answer: the new desired size, why, and what to remember."""

    desired: int
    reason: str
    memory: AutoscaleMemory
    signals: Signals


def clamp(size: int, policy: ScalingPolicy) -> int:
    """The size pulled into [min_replicas, max_replicas]."""
    return max(policy.min_replicas, min(policy.max_replicas, size))


def is_warm(vm: VmView, policy: ScalingPolicy, now: float) -> bool:
    """Ready for at least the warm-up time: its load is representative."""
    return vm.state is VmState.READY and vm.ready_at is not None and now - vm.ready_at >= policy.warmup_s


def capacity(state: FleetState, now: float) -> tuple[list[VmView], int]:
    """Warm VMs (their load counts) and how many more are booting, warming or requested."""
    leaving = set(state.drains) | state.drain_requests
    counted = [vm for vm in state.vms.values() if vm.state in CAPACITY_STATES and vm.name not in leaving]
    warm = [vm for vm in counted if is_warm(vm, state.policy, now)]
    return warm, len(counted) - len(warm) + len(state.pending)


def recommend(policy: ScalingPolicy, observed: float, warm: int, warming: int, current: int) -> int:
    """ceil(warm x ratio), inside the tolerance band the current size; warming VMs count as capacity.

    Scaling up, warming VMs are assumed empty (the warm VMs' load alone says how many are
    needed), and the size gets `scale_up_headroom` on top: a steady rise then takes fewer,
    larger steps, paid for in VMs. Scaling down, warming VMs are assumed at target, so a fleet
    still booting is not shrunk.
    """
    ratio = observed / policy.target
    if 1.0 - max(policy.tolerance, policy.scale_down_tolerance) <= ratio <= 1.0 + policy.tolerance:
        return current
    if ratio > 1.0:
        return math.ceil(warm * ratio * (1 + policy.scale_up_headroom) - 1e-9)
    return math.ceil(warm * ratio + warming - 1e-9)


def history_span(policy: ScalingPolicy) -> float:
    """How much load history the estimators need: the scale-down window and its settle time, or the noise span."""
    return max(policy.scale_down_stabilization_s + policy.scale_down_settle_s + 1, NOISE_SPAN_S)


def _observations(
    memory: AutoscaleMemory, policy: ScalingPolicy, now: float, load: LoadView, value: float
) -> tuple[tuple[float, float], ...]:
    """The demand history, one entry per load snapshot (stamped with its arrival), oldest dropped.

    Per snapshot, not per evaluation: the leader also evaluates between snapshots, and a repeated
    value would read as "no change" and shrink the noise the step detector compares jumps with.
    """
    kept = since(memory.observations, now - history_span(policy), inclusive=True)
    if kept and kept[-1][0] >= load.at:
        return kept
    return (*kept, (load.at, value))


def since(entries: tuple[tuple[float, T], ...], cut: float, inclusive: bool = False) -> tuple[tuple[float, T], ...]:
    """The time-ordered `entries` from `cut` on (after it, unless `inclusive`): the old ones are a prefix.

    Each evaluation drops a few entries off the front of histories hundreds long; scanning only
    the prefix is what keeps a day's replay in seconds.
    """
    start = 0
    while start < len(entries) and (entries[start][0] < cut if inclusive else entries[start][0] <= cut):
        start += 1
    return entries[start:] if start else entries


def newest(entries: tuple[tuple[float, T], ...], cut: float) -> tuple[tuple[float, T], ...]:
    """The time-ordered `entries` at or after `cut`, found from the newest end (a short window of a long history)."""
    start = len(entries)
    while start > 0 and entries[start - 1][0] >= cut:
        start -= 1
    return entries[start:]


def witness(state: FleetState, load: LoadView, now: float) -> FleetState:
    """A follower's share of the autoscaler: add the snapshot to the demand history, decide nothing.

    The history is what a scale-in needs a whole window of and what the step detector reads
    its noise from; a follower that keeps it takes over with the window already seen, instead
    of holding every scale-in for a fresh window after a failover.
    """
    warm, warming = capacity(state, now)
    observed = observe(state.policy.signal, warm, load)
    if observed is None:
        return state
    value = demand(state.policy.signal, observed, len(warm) + warming, load)
    seen = _observations(state.memory, state.policy, now, load, value)
    return replace(state, memory=replace(state.memory, observations=seen))


def stabilize(memory: AutoscaleMemory, policy: ScalingPolicy, current: int, now: float) -> int:
    """Up: the lowest recommendation of the scale-up window (0 s by default: at once); otherwise hold."""
    ups = [r for _, r in newest(memory.recommendations, now - policy.scale_up_stabilization_s)] or [current]
    return max(min(ups), current)


def rate_limit(memory: AutoscaleMemory, policy: ScalingPolicy, current: int, wanted: int, now: float) -> int:
    """One action per period in each direction, each of at most max(max_step, max_percent of the size).

    Counting actions rather than VMs is what keeps the number of scale events low: a step
    that follows a rising average second by second would otherwise add one VM at a time.
    """
    if wanted > current:
        if any(d > 0 and t > now - policy.scale_up_period_s for t, d in memory.actions):
            return current
        step = max(policy.scale_up_max_step, math.floor(current * policy.scale_up_max_percent / 100))
        return min(wanted, current + step)
    if wanted < current:
        if any(t > now - (policy.scale_down_period_s if d < 0 else policy.scale_down_after_up_s)
               for t, d in memory.actions):
            return current
        step = max(policy.scale_down_max_step, math.floor(current * policy.scale_down_max_percent / 100))
        return max(wanted, current - step)
    return current


def remember(memory: AutoscaleMemory, policy: ScalingPolicy, now: float, rec: int, delta: int) -> AutoscaleMemory:
    """Add this tick's recommendation (and action), forgetting what no window (nor the churn budget) can see."""
    keep = max(policy.scale_up_stabilization_s, policy.scale_down_stabilization_s)
    recs = (*since(memory.recommendations, now - keep), (now, rec))
    span = max(policy.scale_up_period_s, policy.scale_down_period_s, policy.cooldown_s, policy.scale_down_after_up_s,
               churn_span(policy))
    actions = since(memory.actions, now - span)
    return replace(memory, recommendations=recs, actions=actions + (((now, delta),) if delta else ()))


def in_cooldown(memory: AutoscaleMemory, policy: ScalingPolicy, now: float) -> bool:
    """An autoscaling action happened less than `cooldown_s` ago."""
    return any(now - t < policy.cooldown_s for t, _ in memory.actions)


def autoscale(state: FleetState, load: LoadView | None, now: float, ahead: Lead | None = None) -> Outcome:
    """The new desired size from the load, or the current one with the reason to hold.

    Bounds are enforced here only on fresh data (the command handlers clamp on a policy
    change): the first size comes from a command or from the first load snapshot. `ahead` is
    the boot lead (`ahead.lead_for` of this state when not given; `decide` gives the one of the
    whole fleet, warm pool included, since the pool is what makes a scale-out a resume).
    """
    policy, current = state.policy, state.desired
    signals = Signals(signal=policy.signal.value, target=policy.target)
    hold = _hold_reason(state, load, now)
    if hold is not None or load is None:
        return Outcome(current, hold or "no load data: hold", state.memory, signals)
    bounded = clamp(current, policy)
    if bounded != current:
        return Outcome(bounded, f"bounds [{policy.min_replicas}, {policy.max_replicas}]", state.memory, signals)
    return _track(state, load, now, signals, lead_for(state) if ahead is None else ahead)


def stale_after(state: FleetState, now: float) -> float:
    """How old the load's news may get: `stale_after_s`, or two report intervals (and a second) of
    the slowest live balancer when that is longer, since news comes only with a report."""
    slowest = max((b.interval_s for b in state.balancers.values() if b.live(now)), default=0.0)
    return max(state.policy.stale_after_s, 2 * slowest + 1)


def _hold_reason(state: FleetState, load: LoadView | None, now: float) -> str | None:
    """Why autoscaling must not act right now, if it must not."""
    policy = state.policy
    if state.hold_until is not None and now < state.hold_until:
        return f"manual scale: autoscaling held for {state.hold_until - now:.0f} s"
    if load is None:
        return "no load data: hold"
    limit = stale_after(state, now)
    if now - load.at > limit:
        return f"load data {now - load.at:.1f} s old (stale after {limit:g} s): hold"
    if in_cooldown(state.memory, policy, now):
        return "cooldown after the last action"
    return None


def _track(state: FleetState, load: LoadView, now: float, signals: Signals, ahead: Lead) -> Outcome:
    """Target tracking proper: observe, project, recommend (up) or find a landing (down), limit, bound.

    The churn budget's widened bands (`churn`) size the recommendation and the scale-in (the flap
    guard's, the recommendation only); the rate limits and bounds are the policy's own.
    """
    policy, current = state.policy, state.desired
    warm, warming = capacity(state, now)
    observed = observe(policy.signal, warm, load)
    if observed is None:
        return _from_zero(state, load, warming, signals)
    seen = _observations(state.memory, policy, now, load, demand(policy.signal, observed, len(warm) + warming, load))
    spent = budget(state.memory.actions, policy, now)
    bands = spent.bands(policy)
    up_bands, guarded = guard(bands, policy, state.memory.actions, now)
    plain, sized = project(seen, policy, load, observed, ahead)  # burst and lead: the policy's own trigger
    rec, led = _led(state, up_bands, (plain, sized), (len(warm), warming), ahead, now)
    memory = remember(state.memory, policy, now, rec, 0)
    wanted, why = stabilize(memory, policy, current, now), ""
    if wanted == current and rec < current:
        wanted, why = _scale_in(seen, bands, now, current, warming, spent)
    size = clamp(rate_limit(memory, policy, current, wanted, now), policy)
    memory = replace(remember(state.memory, policy, now, rec, size - current), observations=seen)
    signals = replace(signals, observed=observed, recommendation=rec)
    guarded = guarded if rec <= current < recommend(policy, plain, len(warm), warming, current) else ""
    notes = [note for note in (led, guarded, "" if spent.words in why else spent.words) if note]
    reason = _explain(policy, observed, rec, wanted, size, current, why)
    return Outcome(size, "; ".join((reason, *notes)), memory, signals)


def _led(state: FleetState, bands: ScalingPolicy, values: tuple[float, float], counts: tuple[int, int], ahead: Lead,
         now: float) -> tuple[int, str]:
    """The recommendation from the projected value, and words when the boot lead changed it.

    A projection is a guess: alone, it never asks for the scale-out that would reverse a
    scale-in of the flap window; it holds the size instead (the load itself crossing the
    trigger still scales out, led or not).
    """
    (plain, sized), (warm, warming), current = values, counts, state.desired
    without = clamp(recommend(bands, plain, warm, warming, current), state.policy)
    rec = clamp(recommend(bands, sized, warm, warming, current), state.policy)
    if rec <= without:
        return rec, ""
    if without <= current and would_flap(state.memory.actions, now, rec - current):
        return current, f"boot lead {ahead.seconds:.3g} s waits: a scale-out now would reverse the last scale-in"
    return rec, f"boot lead {ahead.seconds:.3g} s ({ahead.basis}): a lasting rise sized +{sized / plain - 1:.0%}"


def _scale_in(seen: tuple[tuple[float, float], ...], policy: ScalingPolicy, now: float, current: int,
              warming: int, spent: Budget) -> tuple[int, str]:
    """The size a scale-in lands on (bounded), or `current`, with the words that say which and why."""
    if warming:
        return current, "scale-in waits for the warming VMs"
    size, why = scale_in_size(seen, policy, now, current)
    size = clamp(size, policy)
    if size < current and spent.hold_in:
        return current, spent.words
    if size < current:
        return size, f"scale in to {size} (the window's peak level fits)"
    return current, why or f"min_replicas is {policy.min_replicas}"


def _from_zero(state: FleetState, load: LoadView, warming: int, signals: Signals) -> Outcome:
    """No warm VM to measure: hold, unless the fleet is empty and traffic is waiting."""
    policy, current = state.policy, state.desired
    total = fleet_total(policy.signal, load)
    demand = load.rps if total is None else total  # p95 latency: any request waiting says "start one"
    if warming or current > 0 or demand <= 0:
        return Outcome(current, "no warm VM to measure: hold", state.memory, signals)
    size = clamp(max(1, math.ceil(demand / policy.target)) if policy.signal is not Signal.P95_LATENCY else 1, policy)
    return Outcome(size, f"traffic ({demand:g}) with no VM: start {size}", state.memory, signals)


def _explain(policy: ScalingPolicy, observed: float, rec: int, wanted: int, size: int, current: int, why: str) -> str:
    """One line a person can follow: the signal against the target, and each step's result."""
    text = f"{policy.signal.value} {observed:.3g} per VM vs target {policy.target:g}: recommend {rec}"
    if why:
        text += f", {why}"
    elif wanted != rec:
        text += f", stabilized to {wanted}"
    if size != wanted:
        text += f", rate-limited to {size}"
    if size == current:
        text += " (hold)"
    return text
