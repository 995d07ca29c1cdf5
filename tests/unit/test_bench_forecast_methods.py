"""The forecast-method bench scores candidates honestly on series whose answer is known."""

from __future__ import annotations

import math

from bench.forecast_methods import METHODS, errors, minute_means
from services.scaler.core.history import DAY_MINUTES


def _daily(days: int, growth: float = 0.0) -> list[float]:
    """A smooth daily wave, each day `growth` times higher than the one before."""
    return [(1 + growth) ** (m // DAY_MINUTES) * (100 + 50 * math.sin(2 * math.pi * m / DAY_MINUTES))
            for m in range(days * DAY_MINUTES)]


def _ratio(series: list[float], method: str, horizon: int) -> float:
    miss, total = errors(series, METHODS[method], range(7, 8))[horizon]
    return miss / total


def test_a_seasonal_method_beats_persistence_on_a_pure_daily_wave() -> None:
    """On a series that repeats every day exactly, the seasonal median is near exact and beats the last value."""
    series = _daily(8)
    assert _ratio(series, "median7", 15) < 0.001
    assert _ratio(series, "persist", 15) > 0.01


def test_the_level_follows_growth_that_the_plain_median_misses() -> None:
    """A fleet growing 10% a day: the level-scaled median follows it, the plain median lags by days."""
    series = _daily(8, growth=0.1)
    assert _ratio(series, "median7*level", 5) < _ratio(series, "median7", 5) / 5


def test_minute_means_average_each_minute_of_a_per_second_trace() -> None:
    """Per-second samples become one mean per whole minute."""
    assert minute_means([1.0] * 60 + [3.0] * 60) == [1.0, 3.0]
