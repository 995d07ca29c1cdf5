"""Multi-day request-rate traces for the forecast bench: daily and weekly shape, a holiday, bursts, noise.

Ten days from a Monday midnight, one entry per second: the first `HISTORY_DAYS` are the
scaler's history, the rest are scored (`bench/scaler_replay.py`). The scored days are a Monday,
a holiday-like Tuesday (`HOLIDAY`: the weekday shape gone, a Sunday's instead, and lower) and a
Wednesday. Two shapes:

- `week`: `day_curve`'s swell (a night low, late-morning and evening peaks), weekends at 60%
  with a later morning, growing 1% a day.
- `office`: office hours: a night low, a sharp start of the working day (08:50-09:05) with a
  scheduled job at 09:00 (a 1.8x step rising in 20 s, 10 minutes long) and an evening batch at
  18:00 (1.5x, 30 minutes): rises that come back every weekday within a minute or two, which a
  reactive controller meets a boot late and a forecast can see coming.

Both add `daily`'s minute-scale wobble (6%, 2-minute memory), 5% per-second noise and 3-5 random
sharp steps a day (1.3-1.8x, 10-60 minutes): the part no forecast can know.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from bench._traces import DAY_S, MINUTE_MEMORY_S, MINUTE_NOISE, day_curve, step_factor, steps

DAYS = 10
HISTORY_DAYS = 7
HOLIDAY = 8
"""The day index (0: the first Monday) that breaks the pattern."""
WEEKEND = (5, 6)


def _weekday(day: int) -> int:
    return day % 7


def week_shape(t: float) -> float:
    """`week`'s expected load at `t` seconds from the first Monday midnight."""
    day = int(t // DAY_S)
    growth = 1 + 0.01 * day
    if _weekday(day) in WEEKEND or day == HOLIDAY:
        return growth * (0.6 if day != HOLIDAY else 0.5) * day_curve((t % DAY_S) - 1.5 * 3600)
    return growth * day_curve(t)


def _ramp(x: float, start: float, length: float) -> float:
    """0 before `start`, rising linearly to 1 over `length` seconds."""
    return min(1.0, max(0.0, (x - start) / length))


def office_shape(t: float, jitter: tuple[float, float] = (0.0, 0.0)) -> float:
    """`office`'s expected load at `t` (weekdays: working hours with a 09:00 job and an 18:00 batch)."""
    day, x = int(t // DAY_S), t % DAY_S
    if _weekday(day) in WEEKEND or day == HOLIDAY:
        return 220 + 180 * math.exp(-(((x / 3600 - 14) / 3.5) ** 2))
    hours = 1100 * _ramp(x, 8.83 * 3600, 900) * (1 - _ramp(x, 17.5 * 3600, 3 * 3600))
    job = 1 + 0.8 * _ramp(x, 9 * 3600 + jitter[0], 20) * (1 - _ramp(x, 9 * 3600 + 600 + jitter[0], 60))
    batch = 1 + 0.5 * _ramp(x, 18 * 3600 + jitter[1], 30) * (1 - _ramp(x, 18.5 * 3600 + jitter[1], 120))
    return (200 + hours) * job * batch


def _days(shape: Callable[[float, random.Random], float], seed: int) -> list[float]:
    """`DAYS` of `shape`, with the wobble, the per-second noise and each day's random steps."""
    rng = random.Random(seed)
    keep = math.exp(-1 / MINUTE_MEMORY_S)
    kick = MINUTE_NOISE * math.sqrt(1 - keep * keep)
    out: list[float] = []
    wobble = 0.0
    for day in range(DAYS):
        planned = steps(DAY_S, rng)
        day_rng = random.Random(rng.random())
        for x in range(DAY_S):
            wobble = keep * wobble + rng.gauss(0, kick)
            factor = math.prod(step_factor(x, step) for step in planned)
            out.append(max(0.0, shape(day * DAY_S + x, day_rng) * factor * (1 + wobble) * rng.gauss(1, 0.05)))
    return out


def week(seed: int) -> list[float]:
    """Ten days of `week_shape` with wobble, noise and random steps."""
    return _days(lambda t, _rng: week_shape(t), seed)


def office(seed: int) -> list[float]:
    """Ten days of `office_shape`; the 09:00 job and the 18:00 batch start up to a minute early or late each day."""
    jitters: dict[int, tuple[float, float]] = {}

    def shape(t: float, rng: random.Random) -> float:
        day = int(t // DAY_S)
        if day not in jitters:
            jitters[day] = (rng.uniform(-60, 60), rng.uniform(-60, 60))
        return office_shape(t, jitters[day])

    return _days(shape, seed)


WEEKS: dict[str, Callable[[int], list[float]]] = {"week": week, "office": office}
