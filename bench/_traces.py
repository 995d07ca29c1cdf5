"""Request-rate traces for the scaler benches: requests/s, one entry per second, from a seed.

Three four-hour shapes that each stress one thing (a slow swell, random bursts, a noisy random
walk) and one day-long trace shaped like real traffic, where they come together.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

DAY_S = 86_400
HOURS_4 = 4 * 3600


def diurnal(seconds: int, seed: int) -> list[float]:
    """A slow swell (one period over the trace) with 10% per-second noise."""
    rng = random.Random(seed)
    return [max(0.0, (900 + 700 * math.sin(2 * math.pi * t / seconds - math.pi / 2)) * rng.gauss(1, 0.1))
            for t in range(seconds)]


def spiky(seconds: int, seed: int) -> list[float]:
    """A steady base with short bursts of 2-4x lasting 30-120 s, and noise."""
    rng = random.Random(seed)
    base = [600 * rng.gauss(1, 0.08) for _ in range(seconds)]
    for _ in range(seconds // 1200):
        start, length, factor = rng.randrange(seconds), rng.randint(30, 120), rng.uniform(2, 4)
        for t in range(start, min(seconds, start + length)):
            base[t] *= factor
    return [max(0.0, x) for x in base]


def noisy(seconds: int, seed: int) -> list[float]:
    """A random walk with heavy noise: the trace that makes naive autoscalers flap."""
    rng = random.Random(seed)
    level, out = 800.0, []
    for _ in range(seconds):
        level = min(2500.0, max(200.0, level + rng.gauss(0, 8)))
        out.append(max(0.0, level * rng.gauss(1, 0.25)))
    return out


def day_curve(t: float) -> float:
    """The day's shape in requests/s at `t` seconds after midnight: a night low, a late-morning and an evening peak."""
    hour = (t % DAY_S) / 3600
    return 250 + 900 * math.exp(-(((hour - 11.5) / 2.8) ** 2)) + 1100 * math.exp(-(((hour - 20.5) / 2.0) ** 2))


STEP_RISE_S = (5.0, 30.0)
"""How long a sharp step takes to rise (and later to fall back): seconds, not minutes."""


def steps(seconds: int, rng: random.Random) -> list[tuple[float, float, float, float, float]]:
    """A few sharp steps: (start, rise, factor, length, fall) each, from 3 to 5 of them over the trace."""
    out = []
    for _ in range(rng.randint(3, 5)):
        start, length = rng.uniform(0, seconds), rng.uniform(600, 3600)
        out.append((start, rng.uniform(*STEP_RISE_S), rng.uniform(1.3, 1.8), length, rng.uniform(*STEP_RISE_S)))
    return out


def step_factor(t: float, step: tuple[float, float, float, float, float]) -> float:
    """One step's multiplier at `t`: 1 before it, rising linearly to its factor, holding, then falling back."""
    start, rise, factor, length, fall = step
    if t < start or t > start + length + fall:
        return 1.0
    if t < start + rise:
        return 1.0 + (factor - 1.0) * (t - start) / rise
    if t <= start + length:
        return factor
    return factor - (factor - 1.0) * (t - start - length) / fall


MINUTE_NOISE = 0.06
"""The minute-scale wobble's standard deviation (a share of the load), with a memory of `MINUTE_MEMORY_S`."""
MINUTE_MEMORY_S = 120.0


def daily(seconds: int, seed: int) -> list[float]:
    """A day of real-world-shaped traffic: `day_curve`, a minute-scale wobble, a few sharp steps, 5% per-second noise.

    The wobble is a first-order autoregressive factor (6% deviation, 2-minute memory): traffic
    that drifts up and down over minutes the way real traffic does, which neither per-second
    noise nor a smooth curve has.
    """
    rng = random.Random(seed)
    keep = math.exp(-1 / MINUTE_MEMORY_S)
    kick = MINUTE_NOISE * math.sqrt(1 - keep * keep)
    planned, wobble, out = steps(seconds, rng), 0.0, []
    for t in range(seconds):
        wobble = keep * wobble + rng.gauss(0, kick)
        factor = math.prod(step_factor(t, step) for step in planned)
        out.append(max(0.0, day_curve(t) * factor * (1 + wobble) * rng.gauss(1, 0.05)))
    return out


TRACES: dict[str, Callable[[int, int], list[float]]] = {"diurnal": diurnal, "spiky": spiky, "noisy": noisy,
                                                        "daily": daily}
SHORT = ("diurnal", "spiky", "noisy")
"""The four-hour traces (the policy-variant and history benches replay only these)."""
LENGTH_S = {"daily": DAY_S}


def trace(name: str, seed: int) -> list[float]:
    """The named trace at its own length (four hours unless `LENGTH_S` says otherwise)."""
    return TRACES[name](LENGTH_S.get(name, HOURS_4), seed)
