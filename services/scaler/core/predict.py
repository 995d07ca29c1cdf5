"""Predictive scaling: the forecast's capacity next to the reactive one, and the warm pool it asks for (pure).

- **Learning** (`learn`, every replica, every snapshot): the load goes into the minute history;
  each minute that closes scores the forecast made for it, the forecast judges itself, and the
  curve for the next minutes is made afresh. Once a minute, so a replay of a week stays fast.
- **Capacity** (`combine`, the leader): the forecast's upper quantile over the next lead (the
  measured boot or resume time plus the scale-up period: a scale-out now is serving no sooner)
  at the target is the predictive size; the desired size is the larger of it and the reactive
  one. The forecast never scales in: it only raises a scale-out, makes one, or floors where a
  reactive scale-in lands (which may hold it).
- **Modes**: `off` keeps the history and forecasts nothing; `watch` (the default) forecasts and
  says what it would do (`ForecastMemory.would`, published by the glue) and changes nothing;
  `on` acts. A forecast that switched itself off (`forecast.judged`) acts in no mode.
- **Pool**: the warm pool per host grows to the forecast's rise over the next refill (a boot,
  plus a minute), spread over the live hosts, within `pool_max`.
"""

from __future__ import annotations

import math
from dataclasses import replace

from services.scaler.core.autoscale import Outcome, clamp, rate_limit
from services.scaler.core.boottimes import Kind, Lead, lead
from services.scaler.core.churn import would_flap
from services.scaler.core.forecast import ForecastMemory, Point, judged, refreshed, score
from services.scaler.core.history import DAY_MINUTES, MINUTE_S, minute_of, record
from services.scaler.core.model import AutoscaleMemory, FleetState, LoadView
from shared.contract.policy import ForecastMode, ScalingPolicy, Signal

UNITS = {Signal.RPS: "req/s", Signal.OUTSTANDING: "in flight", Signal.FLOWS: "flows"}
"""Signals whose fleet-wide value adds up over VMs (so it can be forecast and divided by the target)."""
LEAD_SHARE = 0.9
"""The boot-time percentile of the forecast's lead when the policy's own boot lead is off."""


def load_value(signal: Signal, load: LoadView) -> float | None:
    """The fleet-wide load in the signal's unit (None: p95 latency, which does not add up over VMs)."""
    if signal is Signal.RPS:
        return load.rps
    if signal is Signal.OUTSTANDING:
        return load.outstanding
    if signal is Signal.FLOWS:
        return load.flows
    return None


def learn(state: FleetState, load: LoadView | None, now: float) -> FleetState:
    """Fold a fresh snapshot into the history; when a minute closes, score, judge and refresh the forecast."""
    policy = state.policy
    value = load_value(policy.signal, load) if load is not None else None
    if load is None or value is None or load.at <= state.history_at:
        return state
    history, closed = record(state.history, policy.signal.value, load.at, value)
    memory = state.forecast
    if closed is not None or (not memory.curve and not memory.note):
        actual = history.mean(closed) if closed is not None else None
        memory = score(memory, closed, actual) if closed is not None and actual is not None else memory
        memory = refreshed(judged(memory, policy.forecast_max_error), history, minute_of(load.at),
                           policy.forecast_quantile)
    return replace(state, history=history, history_at=load.at, forecast=memory)


def upcoming(memory: ForecastMemory, now: float, seconds: float) -> Point | None:
    """The highest upper forecast from now to `seconds` ahead (None: no forecast for that time)."""
    first, last = minute_of(now), minute_of(now + seconds)
    points = [p for p in memory.curve if first <= p.minute <= last]
    return max(points, key=lambda p: p.upper) if points else None


def combine(state: FleetState, outcome: Outcome, now: float, boot: Lead) -> tuple[Outcome, ForecastMemory]:
    """The desired size as the larger of the reactive and the predictive one (never a scale-in from the forecast).

    Returns the outcome (changed only in mode `on` with a working forecast) and the forecast's
    memory with what it would have done and the pool it asks for.
    """
    policy, memory = state.policy, state.forecast
    unit = UNITS.get(policy.signal)
    held = outcome.signals.observed is None  # a hold, bounds or no warm VM: the reactive side did not track
    if policy.forecast_mode is ForecastMode.OFF or unit is None or memory.off or memory.missing or held \
            or not memory.curve:
        return outcome, replace(memory, would=None, pool=0)
    span = boot.seconds + max(policy.scale_up_period_s, policy.evaluation_interval_s)
    point = upcoming(memory, now, span)
    if point is None:
        return outcome, replace(memory, would=None, pool=0)
    size = clamp(math.ceil(point.upper / policy.target - 1e-9), policy)
    floor = clamp(math.ceil(point.upper / (policy.target * (1 + policy.tolerance)) - 1e-9), policy)
    chosen, why = _chosen(state, outcome, (floor, size), now)
    memory = replace(memory, would=chosen if chosen != outcome.desired else None, pool=_pool(state, now, chosen))
    if policy.forecast_mode is not ForecastMode.ON or not why:
        watching = policy.forecast_mode is ForecastMode.WATCH and memory.would is not None
        words = f"; forecast (watch) would make it {chosen}: {why}" if watching else ""
        return replace(outcome, reason=outcome.reason + words), memory
    said = f"forecast {point.upper:.4g} {unit} at {_clock(point.minute)} (p{policy.forecast_quantile * 100:.0f}), " \
           f"{size} VMs; reactive {outcome.desired}"
    return _acted(state, outcome, chosen, f"{said}: {why}", now), memory


def _chosen(state: FleetState, outcome: Outcome, sizes: tuple[int, int], now: float) -> tuple[int, str]:
    """The size max(reactive, predictive) allows, the forecast never lowering it, and which one decided.

    `sizes`: (floor, size). The forecast acts as the reactive side does, on its trigger: it scales
    out once its upper quantile would put the fleet above target + `tolerance` (the floor is the
    fleet that keeps it under), to `size` (the upper quantile at target). A fleet inside the band
    is left alone, so a forecast with no rise in it costs no VM; a reactive scale-in lands no
    lower than the floor, so the forecast never has to undo it.
    """
    policy, current, reactive = state.policy, state.desired, outcome.desired
    floor, size = sizes
    if reactive < current:
        landing = min(max(reactive, floor), current)
        if landing == reactive:
            return reactive, ""
        return landing, "holds the scale-in" if landing == current else f"scale-in lands on {landing}"
    if floor <= max(reactive, current) or size <= reactive or _idle(policy, outcome):
        return reactive, ""
    before = _without_now(outcome, now)
    limited = rate_limit(before, policy, current, size, now) if reactive == current else \
        min(size, current + max(policy.scale_up_max_step, math.floor(current * policy.scale_up_max_percent / 100)))
    if limited <= reactive:
        return reactive, ""
    if reactive == current and would_flap(before.actions, now, limited - current):
        return current, ""
    return limited, "scale out ahead of the forecast rise"


def _idle(policy: ScalingPolicy, outcome: Outcome) -> bool:
    """The fleet sits below the band (a forecast scale-out the load has not followed): no further one.

    A forecast rise that does not come (a holiday morning) then costs one scale-out, not one per
    minute until the forecast's error holds it; a rise that comes loads the VMs back into the band.
    """
    observed = outcome.signals.observed
    return observed is not None and observed < policy.target * (1 - max(policy.tolerance, policy.scale_down_tolerance))


def _without_now(outcome: Outcome, now: float) -> AutoscaleMemory:
    """The memory without this evaluation's action (the forecast's scale-out replaces or joins it)."""
    return replace(outcome.memory, actions=tuple((t, d) for t, d in outcome.memory.actions if t != now))


def _acted(state: FleetState, outcome: Outcome, chosen: int, reason: str, now: float) -> Outcome:
    """The outcome at `chosen`, its action this evaluation (if any) recorded as the change from the current size."""
    memory = _without_now(outcome, now)
    delta = chosen - state.desired
    actions = (*memory.actions, (now, delta)) if delta else memory.actions
    return replace(outcome, desired=chosen, memory=replace(memory, actions=actions),
                   reason=f"{reason}; {outcome.reason}")


def _pool(state: FleetState, now: float, chosen: int) -> int:
    """Pooled VMs per host for the forecast's rise over the next refill (a boot and a minute), within `pool_max`."""
    policy = state.policy
    hosts = max(1, len(state.hosts))
    if policy.pool_max <= 0:
        return 0
    refill = lead(state.boots, LEAD_SHARE, (), list(state.hosts))
    point = upcoming(state.forecast, now, 2 * refill.seconds + MINUTE_S)
    if point is None or refill.kind is not Kind.BOOT:
        return 0
    rise = clamp(math.ceil(point.upper / policy.target - 1e-9), policy) - max(chosen, state.desired)
    return min(policy.pool_max, max(0, math.ceil(rise / hosts)))


def _clock(minute: int) -> str:
    """HH:MM (UTC) of a minute index."""
    of_day = minute % DAY_MINUTES
    return f"{of_day // 60:02d}:{of_day % 60:02d}"
