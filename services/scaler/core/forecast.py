"""The load forecast: the same time on earlier days, at the level of the last half hour (pure).

Method (chosen by measurement on the replay bench's multi-day traces, see docs/services/scaler.md):

- **Base**: for a minute m, the median over the last 7 days of the load at m's time of day (each
  day's value the mean of minutes m-1..m+1, so one noisy minute does not set it). The median
  ignores one odd day in the history (a holiday, an outage, a burst that happened at that minute
  once); days with no data at that time are skipped, and fewer days are used while the history
  is young (one is enough).
- **Level**: the median, over the last `LEVEL_MINUTES` (10) closed minutes, of actual / base. A
  week whose traffic grew by 20%, a weekend day or a holiday runs at its own level; the median
  keeps one burst minute from moving it, and a daily rise that does not come (a holiday) stops
  being forecast within minutes. Clamped to [0.2, 5].
- **Upper quantile**: point x (1 + the `quantile` of the forecast's own relative errors over
  the last day), the error it really makes one minute ahead; +10% until an hour is scored.
- **Error**: each closed minute scores the point forecast made for it: mean absolute error over
  the last day divided by the mean load. Above `forecast_max_error` (after at least 4 hours
  scored) the forecast switches itself off; below 0.8 of it it comes back. The same error over
  the last hour, or over the last 3 minutes, above it holds the forecast meanwhile (`missing`):
  a day that breaks the pattern (a holiday) shows it within minutes of its morning, long before
  a day's error does.

Measured against the other candidates by `python -m bench forecast_methods` (mean absolute error
over mean load, 15 minutes ahead, the lead's horizon; scored days of the `week` / `office` traces):
this method 0.126 / 0.133; the last minute held (a reactive controller's view) 0.135 / 0.144; an
additive Holt-Winters with a daily season (statsmodels, fitted on the history) 0.149 / 0.176;
yesterday at today's level 0.189 / 0.203; the plain 7-day median 0.279 / 0.337. On the holiday the
level keeps it within 0.137 / 0.206 where every unscaled seasonal method is off by 73% or more. A
3-minute level is a hair better (0.125 / 0.130) but follows a single burst minute; 10 was kept.
statsmodels is not a dependency: it brings numpy, scipy and pandas for a method that measured worse
here, and a Holt-Winters season of 1440 minutes cannot see weekly shape from 7 days of history.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, replace

from services.scaler.core.history import DAY_MINUTES, LoadHistory

BASE_DAYS = 7
LEVEL_MINUTES = 10
HORIZON_MINUTES = 15
"""How far ahead the decision's forecast is kept (the lead and the pool's refill are well inside it)."""
SCORED_MINUTES = DAY_MINUTES
MIN_SCORED = 240
"""Minutes of scores before the forecast may judge itself (4 hours)."""
MISS_MINUTES = 60
"""The recent window whose error above `forecast_max_error` holds the forecast (today does not follow)."""
SHORT_MISS_MINUTES = 3
"""A rise forecast for minutes that keeps not coming (a holiday's morning) holds the forecast after this many."""
MIN_FOR_QUANTILE = 60
DEFAULT_MARGIN = 0.1
BACK_ON = 0.8


@dataclass(frozen=True)
class Point:
    """The forecast for one minute: the point (median) value and the upper quantile, in the signal's unit."""

    minute: int
    point: float
    upper: float


@dataclass(frozen=True)
class ForecastMemory:
    """What the forecast keeps between evaluations (part of `FleetState`)."""

    curve: tuple[Point, ...] = ()
    """From the current minute on, `HORIZON_MINUTES` of them; empty: no forecast (see `note`)."""
    scores: tuple[tuple[float, float], ...] = ()
    """(point forecast, actual mean) of the last day's closed minutes that had a forecast."""
    off: bool = False
    """Switched itself off: its error over the last day is above `forecast_max_error`."""
    missing: bool = False
    """Held: its error over the last `MISS_MINUTES` is above `forecast_max_error` (lifts by itself)."""
    note: str = ""
    """Why there is no forecast or why it is off (empty when it is on and working)."""
    would: int | None = None
    """The size the forecast asked for at the last evaluation (None: it asked for nothing)."""
    pool: int = 0
    """The warm pool per host the forecast asks for (0: none beyond the policy's)."""


def base(history: LoadHistory, minute: int, days: int = BASE_DAYS) -> float | None:
    """The median over the last `days` days of the load at `minute`'s time of day (None: no day has it)."""
    values = [v for d in range(1, days + 1) if (v := _smoothed(history, minute - d * DAY_MINUTES)) is not None]
    return statistics.median(values) if values else None


def _smoothed(history: LoadHistory, minute: int) -> float | None:
    values = [v for m in (minute - 1, minute, minute + 1) if (v := history.mean(m)) is not None]
    return sum(values) / len(values) if values else None


def level(history: LoadHistory, minute: int) -> float:
    """How today runs against the base: the median of actual / base over the last closed minutes (1: unknown)."""
    ratios = []
    for m in range(minute - LEVEL_MINUTES, minute):
        actual, expected = history.mean(m), base(history, m)
        if actual is not None and expected is not None and expected > 0:
            ratios.append(actual / expected)
    return min(5.0, max(0.2, statistics.median(ratios))) if ratios else 1.0


def margin(scores: tuple[tuple[float, float], ...], quantile: float) -> float:
    """The upper quantile's distance above the point: the `quantile` of the relative errors, never below 0."""
    errors = sorted(actual / point - 1 for point, actual in scores if point > 0)
    if len(errors) < MIN_FOR_QUANTILE:
        return DEFAULT_MARGIN
    rank = min(len(errors) - 1, max(0, math.ceil(quantile * len(errors)) - 1))
    return max(0.0, errors[rank])


def predict(history: LoadHistory, minute: int, count: int, quantile: float,
            scores: tuple[tuple[float, float], ...] = ()) -> tuple[Point, ...]:
    """Points for `count` minutes from `minute` on (those whose time of day no earlier day has are left out)."""
    ratio, up = level(history, minute), 1 + margin(scores, quantile)
    points = []
    for m in range(minute, minute + count):
        expected = base(history, m)
        if expected is not None:
            points.append(Point(m, expected * ratio, expected * ratio * up))
    return tuple(points)


def error(scores: tuple[tuple[float, float], ...]) -> float | None:
    """Mean absolute error / mean load of the scored minutes (None: nothing scored or no load)."""
    total = sum(actual for _, actual in scores)
    return sum(abs(actual - point) for point, actual in scores) / total if scores and total > 0 else None


def score(memory: ForecastMemory, minute: int, actual: float) -> ForecastMemory:
    """Score the closed `minute` against the forecast made for it, keeping a day of scores."""
    made = next((p for p in memory.curve if p.minute == minute), None)
    if made is None:
        return memory
    scores = (*memory.scores[-(SCORED_MINUTES - 1):], (made.point, actual))
    return replace(memory, scores=scores)


def judged(memory: ForecastMemory, max_error: float) -> ForecastMemory:
    """Switch off when the last day's error is above `max_error`, back on under `BACK_ON` of it; say which."""
    missed = [(span, err) for span, scored in (("hour", memory.scores[-MISS_MINUTES:]),
                                               ("3 minutes", memory.scores[-SHORT_MISS_MINUTES:]))
              if len(scored) >= min(len(memory.scores), SHORT_MISS_MINUTES) and (err := error(scored)) is not None
              and err > max_error]
    if missed:
        span, err = missed[-1]
        memory = replace(memory, missing=True, note=f"forecast holds: its error over the last {span} is {err:.0%} "
                                                    f"> {max_error:.0%} (today does not follow the earlier days)")
    elif memory.missing:
        memory = replace(memory, missing=False, note="")
    err = error(memory.scores)
    if err is None or len(memory.scores) < MIN_SCORED:
        return replace(memory, off=False) if memory.off else memory
    if err > max_error:
        return replace(memory, off=True,
                       note=f"forecast off: its error over the last day is {err:.0%} > {max_error:.0%}")
    if memory.off and err > BACK_ON * max_error:
        return replace(memory, note=f"forecast off: its error over the last day is {err:.0%}, on again under "
                                    f"{BACK_ON * max_error:.0%}")
    return replace(memory, off=False, note=memory.note if memory.missing else "")


def refreshed(memory: ForecastMemory, history: LoadHistory, minute: int, quantile: float) -> ForecastMemory:
    """The curve for the next `HORIZON_MINUTES` from `minute`, or a note saying why there is none."""
    curve = predict(history, minute, HORIZON_MINUTES, quantile, memory.scores)
    if curve:
        return replace(memory, curve=curve, note=memory.note if memory.off or memory.missing else "")
    seen = history.seen_minutes() / 60
    return replace(memory, curve=(), note=f"forecast: no earlier day at this time yet ({seen:.0f} h of history)")
