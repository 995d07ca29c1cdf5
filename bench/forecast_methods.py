"""Which forecast method: each candidate's error on the multi-day traces, minutes ahead, same data.

The scaler's forecast (`services/scaler/core/forecast.py`) was to be picked by measurement. This
bench scores every candidate on the same per-minute means of `bench/_weeks.py`'s traces (the
first `HISTORY_DAYS` as history, the rest scored; the holiday-like day also alone): a forecast
for minute m+h-1 is made knowing only the minutes before m, for h = 1, 5 and 15 minutes (the
lead of a boot plus an evaluation period is inside 15). The figure is the mean absolute error
over the mean load (lower is better), per trace, summed over the seeds.

Candidates:
- `persist`: the last closed minute (what a purely reactive controller assumes).
- `day`: the same minute yesterday; `week`: the same minute a week ago.
- `mean7` / `median7`: the mean / median of the same minute on the last 7 days.
- `median7*level`: the median scaled by today's level (the median of actual/base over the last
  10 minutes): the method the scaler ships.
- `day*level`: yesterday scaled by today's level.
- `holt-winters`: additive, a daily season of 1440 minutes (statsmodels' ExponentialSmoothing,
  fitted on the history days, then run over the scored days with the fitted parameters). Only
  when statsmodels is importable; the project itself does not depend on it (no numpy).

    .venv/bin/python -m bench forecast_methods
    (Holt-Winters too: a Python with statsmodels and PYTHONPATH=. python -m bench forecast_methods)
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from functools import cache

from bench._weeks import DAYS, HISTORY_DAYS, HOLIDAY, WEEKS
from services.scaler.core.forecast import LEVEL_MINUTES
from services.scaler.core.history import DAY_MINUTES

SEEDS = (7, 11)
HORIZONS = (1, 5, 15)
Series = list[float]
Method = Callable[[Series, int, int], float | None]
"""(minute means, now minute m, target minute t >= m) -> the forecast for t, None when it has none."""


def minute_means(load: list[float]) -> Series:
    """Per-minute means of a per-second trace."""
    return [sum(load[i: i + 60]) / 60 for i in range(0, len(load) - 59, 60)]


def _smoothed(series: Series, minute: int) -> float | None:
    values = [series[m] for m in (minute - 1, minute, minute + 1) if 0 <= m < len(series)]
    return sum(values) / len(values) if values else None


def _same_time(series: Series, minute: int, days: int) -> list[float]:
    return [v for d in range(1, days + 1) if minute - d * DAY_MINUTES >= 1
            and (v := _smoothed(series, minute - d * DAY_MINUTES)) is not None]


def _level(series: Series, now: int, base: Callable[[int], float | None], minutes: int = LEVEL_MINUTES) -> float:
    ratios = [series[m] / b for m in range(now - minutes, now) if (b := base(m))]
    return min(5.0, max(0.2, statistics.median(ratios))) if ratios else 1.0


def _median7(series: Series, minute: int) -> float | None:
    values = _same_time(series, minute, 7)
    return statistics.median(values) if values else None


def _day(series: Series, minute: int) -> float | None:
    return _smoothed(series, minute - DAY_MINUTES) if minute >= DAY_MINUTES + 1 else None


def _scaled(base: Callable[[Series, int], float | None], minutes: int = LEVEL_MINUTES) -> Method:
    def method(series: Series, now: int, target: int) -> float | None:
        value = base(series, target)
        return None if value is None else value * _level(series, now, lambda m: base(series, m), minutes)
    return method


def _mean7(series: Series, now: int, target: int) -> float | None:
    values = _same_time(series, target, 7)
    return sum(values) / len(values) if values else None


METHODS: dict[str, Method] = {
    "persist": lambda s, now, t: s[now - 1],
    "day": lambda s, now, t: _day(s, t),
    "week": lambda s, now, t: _smoothed(s, t - 7 * DAY_MINUTES) if t >= 7 * DAY_MINUTES + 1 else None,
    "mean7": _mean7,
    "median7": lambda s, now, t: _median7(s, t),
    "median7*level": _scaled(_median7),
    "median7*level3": _scaled(_median7, 3),
    "median7*level30": _scaled(_median7, 30),
    "day*level": _scaled(_day),
}


def holt_winters(series: Series) -> Method | None:
    """An additive Holt-Winters with a daily season, fitted on the history days (None: no statsmodels)."""
    try:
        from statsmodels.tsa.holtwinters import ExponentialSmoothing
    except ImportError:
        return None
    history = series[: HISTORY_DAYS * DAY_MINUTES]
    fit = ExponentialSmoothing(history, seasonal="add", seasonal_periods=DAY_MINUTES,
                               initialization_method="heuristic").fit()
    run = ExponentialSmoothing(series, seasonal="add", seasonal_periods=DAY_MINUTES,
                               initialization_method="known", initial_level=fit.params["initial_level"],
                               initial_seasonal=fit.params["initial_seasons"]).fit(
        smoothing_level=fit.params["smoothing_level"], smoothing_seasonal=fit.params["smoothing_seasonal"],
        optimized=False)
    level, season = list(run.level), list(run.season)

    def method(_s: Series, now: int, target: int) -> float | None:
        return level[now - 1] + season[target - DAY_MINUTES] if target >= DAY_MINUTES else None
    return method


def errors(series: Series, method: Method, days: range) -> dict[int, tuple[float, float]]:
    """Per horizon: (sum of absolute errors, sum of actual load) over `days`' minutes that had a forecast."""
    out: dict[int, tuple[float, float]] = {}
    for h in HORIZONS:
        miss = total = 0.0
        for now in range(days.start * DAY_MINUTES, days.stop * DAY_MINUTES - h + 1):
            value = method(series, now, now + h - 1)
            if value is not None:
                miss, total = miss + abs(series[now + h - 1] - value), total + series[now + h - 1]
        out[h] = (miss, total)
    return out


def _add(a: dict[int, tuple[float, float]], b: dict[int, tuple[float, float]]) -> dict[int, tuple[float, float]]:
    return {h: (a.get(h, (0, 0))[0] + b[h][0], a.get(h, (0, 0))[1] + b[h][1]) for h in b}


@cache
def _trace(name: str, seed: int) -> tuple[Series, dict[str, Method]]:
    """A trace's minute means and the methods to score on it (Holt-Winters fitted once per trace)."""
    series = minute_means(WEEKS[name](seed))
    methods = dict(METHODS)
    hw = holt_winters(series)
    if hw is not None:
        methods["holt-winters"] = hw
    return series, methods


def table(name: str, days: range) -> dict[str, dict[int, tuple[float, float]]]:
    """Every method's summed errors on trace `name` over `days`, all seeds."""
    sums: dict[str, dict[int, tuple[float, float]]] = {}
    for seed in SEEDS:
        series, methods = _trace(name, seed)
        for label, method in methods.items():
            sums[label] = _add(sums.get(label, {}), errors(series, method, days))
    return sums


def show(title: str, sums: dict[str, dict[int, tuple[float, float]]]) -> None:
    print(f"\n{title}: mean absolute error / mean load")
    print(f"{'method':<16}" + "".join(f"{f'{h} min ahead':>14}" for h in HORIZONS))
    for label, per in sums.items():
        print(f"{label:<16}" + "".join(f"{per[h][0] / per[h][1]:>14.3f}" for h in HORIZONS))


def main() -> None:
    print("forecast methods on bench/_weeks.py traces, seeds", SEEDS, "(statsmodels absent: no holt-winters)"
          if holt_winters([0.0] * 2 * DAY_MINUTES) is None else "")
    for name in WEEKS:
        show(f"{name}, scored days {HISTORY_DAYS}-{DAYS - 1}", table(name, range(HISTORY_DAYS, DAYS)))
        show(f"{name}, holiday (day {HOLIDAY})", table(name, range(HOLIDAY, HOLIDAY + 1)))


if __name__ == "__main__":
    main()
