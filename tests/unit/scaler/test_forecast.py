"""The forecast (pure): seasons, level shifts, gaps, outliers; joining the reactive size; self-switch-off."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import pytest

from services.scaler.core.autoscale import Outcome
from services.scaler.core.boottimes import Kind, Lead
from services.scaler.core.forecast import MIN_SCORED, ForecastMemory, Point, base, error, judged, predict
from services.scaler.core.history import DAY_MINUTES, KEPT_MINUTES, LoadHistory, close, merged, record
from services.scaler.core.model import AutoscaleMemory, FleetState, LoadView, Signals
from services.scaler.core.predict import combine, learn
from services.scaler.foresight import decode, encode
from shared.contract.policy import ForecastMode, ScalingPolicy, Signal

POLICY = ScalingPolicy(signal=Signal.RPS, target=70, min_replicas=1, max_replicas=100, forecast_mode=ForecastMode.ON)


def shape(minute: int) -> float:
    """A daily curve: 200 at night, 1000 at noon."""
    return 600 - 400 * math.cos(2 * math.pi * (minute % DAY_MINUTES) / DAY_MINUTES)


def history_of(days: int, value: Callable[[int], float] = shape, skip: range = range(0)) -> LoadHistory:
    """`days` of minutes of `value`, the minutes in `skip` left unseen."""
    history = LoadHistory(signal="rps")
    for minute in range(days * DAY_MINUTES):
        if minute not in skip:
            history = close(history, minute, value(minute), value(minute))
    return history


def test_a_daily_season_is_forecast_from_the_same_time_on_earlier_days() -> None:
    """After three days of a daily curve, the next day's noon and night are forecast within 1%."""
    history = history_of(3)
    noon, night = 3 * DAY_MINUTES + 720, 3 * DAY_MINUTES + 60
    assert base(history, noon) == pytest.approx(shape(noon), rel=0.01)
    assert base(history, night) == pytest.approx(shape(night), rel=0.01)


def test_a_level_shift_today_scales_the_forecast() -> None:
    """A day running 50% above the earlier ones is forecast at 1.5x their shape within the hour."""
    today = 3 * DAY_MINUTES

    def shifted(minute: int) -> float:
        return shape(minute) * (1.5 if minute >= today else 1.0)

    history = history_of(3, shifted)
    for minute in range(today, today + 30):
        history = close(history, minute, shifted(minute), shifted(minute))
    point = predict(history, today + 30, 1, 0.9)[0]
    assert point.point == pytest.approx(1.5 * shape(today + 30), rel=0.02)


def test_gaps_are_skipped_and_no_earlier_day_gives_no_forecast() -> None:
    """A day with an unseen hour still forecasts that hour from the other days; a first day forecasts nothing."""
    day = DAY_MINUTES
    history = history_of(3, skip=range(day + 600, day + 660))
    assert base(history, 3 * day + 630) == pytest.approx(shape(630), rel=0.01)
    assert predict(history_of(1), DAY_MINUTES - 10, 5, 0.9) == ()


def test_an_outlier_day_does_not_move_the_median() -> None:
    """One earlier day with a 10x burst at noon leaves noon's forecast at the usual level."""
    noon = 720

    def burst(minute: int) -> float:
        return shape(minute) * (10 if minute == DAY_MINUTES + noon else 1)

    assert base(history_of(3, burst), 3 * DAY_MINUTES + noon) == pytest.approx(shape(noon), rel=0.01)


def test_the_history_is_bounded_and_survives_an_encoding() -> None:
    """Fifteen days keep only the last 14 in under 150 kB, which decode back to within 0.01% of the peak."""
    history = history_of(15)
    assert len(history.means) == KEPT_MINUTES and history.first == DAY_MINUTES
    data = encode(history)
    back = decode(data)
    assert len(data) < 150_000 and back.first == history.first
    assert back.mean(DAY_MINUTES * 5 + 3) == pytest.approx(history.mean(DAY_MINUTES * 5 + 3), abs=0.1)


def test_merging_keeps_both_replicas_minutes() -> None:
    """A follower's recent minutes and the stored old days together make one history."""
    stored = history_of(2)
    mine = LoadHistory(signal="rps")
    for minute in range(2 * DAY_MINUTES + 5, 2 * DAY_MINUTES + 10):
        mine = close(mine, minute, 1.0, 1.0)
    both = merged(mine, stored)
    assert both.mean(10) == shape(10) and both.mean(2 * DAY_MINUTES + 7) == 1.0
    assert both.mean(2 * DAY_MINUTES + 2) is None


def test_snapshots_close_minutes_into_means_and_peaks() -> None:
    """Snapshots in one minute make its mean and peak when the next minute's first one arrives."""
    history = LoadHistory()
    for t, value in ((0.0, 10.0), (20.0, 30.0), (40.0, 20.0)):
        history, closed = record(history, "rps", t, value)
        assert closed is None
    history, closed = record(history, "rps", 61.0, 5.0)
    assert closed == 0 and history.mean(0) == 20.0 and history.peak(0) == 30.0


def fleet(desired: int, upper: float, policy: ScalingPolicy = POLICY, now: float = 0.0) -> FleetState:
    """A fleet whose forecast says `upper` for the next minutes."""
    curve = tuple(Point(m, upper / 1.1, upper) for m in range(int(now // 60), int(now // 60) + 15))
    return FleetState(desired=desired, policy=policy, forecast=ForecastMemory(curve=curve), hosts={"h1": 10, "h2": 10})


def outcome(desired: int, observed: float = 60.0) -> Outcome:
    return Outcome(desired, "reactive words", AutoscaleMemory(), Signals("rps", observed=observed, target=70))


def test_the_larger_of_reactive_and_predictive_decides_and_says_so() -> None:
    """A forecast of 1400 req/s (20 VMs at target) lifts a reactive hold at 10 to 20, naming both."""
    out, memory = combine(fleet(10, 1400.0), outcome(10), 0.0, _lead())
    assert out.desired == 20 and memory.would == 20
    assert "forecast 1400 req/s at 00:00 (p90), 20 VMs; reactive 10" in out.reason
    assert out.memory.actions == ((0.0, 10),)
    bigger, _ = combine(fleet(10, 1400.0), outcome(25), 0.0, _lead())
    assert bigger.desired == 25


def test_the_forecast_never_scales_in() -> None:
    """A forecast far below the fleet neither lowers a hold nor a reactive scale-out."""
    for reactive in (10, 12):
        out, _ = combine(fleet(10, 100.0), outcome(reactive), 0.0, _lead())
        assert out.desired == reactive


def test_a_reactive_scale_in_lands_no_lower_than_the_forecast_needs() -> None:
    """A scale-in from 10 to 5 lands on 8 when the forecast's 600 req/s needs 8 VMs under the trigger."""
    out, _ = combine(fleet(10, 600.0), outcome(5, observed=30.0), 0.0, _lead())
    assert out.desired == 8 and "scale-in lands on 8" in out.reason


def test_watch_mode_changes_nothing_and_says_what_it_would_do() -> None:
    """In `watch` the size is the reactive one; the memory and the reason carry the forecast's size."""
    watching = POLICY.model_copy(update={"forecast_mode": ForecastMode.WATCH})
    out, memory = combine(fleet(10, 1400.0, watching), outcome(10), 0.0, _lead())
    assert out.desired == 10 and memory.would == 20 and "forecast (watch) would make it 20" in out.reason


def test_a_forecast_that_keeps_missing_switches_itself_off_and_back_on() -> None:
    """A day's error of 50% switches it off and says so; back under 0.8 of the limit it is on again."""
    bad = ForecastMemory(scores=tuple((150.0, 100.0) for _ in range(MIN_SCORED)))
    off = judged(bad, 0.25)
    assert off.off and "error over the last day is 50% > 25%" in off.note
    out, _ = combine(replace(fleet(10, 1400.0), forecast=replace(off, curve=fleet(10, 1400.0).forecast.curve)),
                     outcome(10), 0.0, _lead())
    assert out.desired == 10
    good = judged(replace(off, scores=tuple((105.0, 100.0) for _ in range(MIN_SCORED))), 0.25)
    assert not good.off and good.note == "" and error(good.scores) == pytest.approx(0.05)


def test_a_miss_in_the_last_minutes_holds_the_forecast() -> None:
    """Three minutes forecast at twice what came hold it (a holiday morning), with the reason."""
    scores = tuple((100.0, 100.0) for _ in range(100)) + tuple((200.0, 100.0) for _ in range(3))
    held = judged(ForecastMemory(scores=scores), 0.25)
    assert held.missing and not held.off and "last 3 minutes" in held.note


def test_the_pool_is_sized_from_the_forecast_rise_within_pool_max() -> None:
    """A rise from 10 to 20 VMs in the next refill, over 2 hosts, asks 5 pooled VMs per host: pool_max 4."""
    policy = POLICY.model_copy(update={"pool_max": 4})
    rising = fleet(10, 1400.0, policy)
    curve = (Point(0, 600.0, 700.0), *rising.forecast.curve[1:])
    rising = replace(rising, forecast=replace(rising.forecast, curve=curve))
    out, memory = combine(rising, outcome(10), 0.0, _lead())
    assert out.desired == 10 and memory.pool == 4
    _, flat = combine(fleet(10, 700.0, policy), outcome(10), 0.0, _lead())
    assert flat.pool == 0


def test_learning_scores_each_closed_minute_against_its_forecast() -> None:
    """A snapshot in a new minute closes the last one, scores it and makes a fresh curve from that minute."""
    state = FleetState(desired=5, policy=POLICY, history=history_of(2))
    start = 2 * DAY_MINUTES * 60.0
    for t in (start, start + 30, start + 61):
        state = learn(state, LoadView(at=t, rps=shape(int(t // 60))), t)
    assert len(state.forecast.scores) == 1 and state.forecast.curve[0].minute == 2 * DAY_MINUTES + 1
    assert learn(state, LoadView(at=start + 61, rps=1.0), start + 62) is state


def _lead() -> Lead:
    return Lead(20.0, Kind.BOOT, "test")
