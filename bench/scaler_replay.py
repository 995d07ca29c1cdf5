"""Replay request-rate traces through `decide()` and a model of the Kubernetes HPA's defaults.

Both run on the same fleet model (`services.scaler.simulate`: capacity per VM, boot time) and
the same target (requests/s per VM). Printed per trace: scale actions, flaps (a reversal
within 5 minutes), seconds and requests above capacity, VM-hours, and ours / HPA ratios.

    .venv/bin/python -m bench scaler_replay
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from services.scaler.simulate import DecideController, FleetModel, SimVm, Tally, replay
from shared.contract.policy import ScalingPolicy, Signal

TARGET_RPS = 70.0
MODEL = FleetModel(capacity_rps=100.0, boot_s=15.0)
POLICY = ScalingPolicy(signal=Signal.RPS, target=TARGET_RPS, min_replicas=2, max_replicas=60)


class HpaController:
    """The HPA with default behaviour: 15 s sync, 10% tolerance, 300 s scale-down window,
    up by max(100%, 4 pods) and down by 100% per 15 s; booting pods are assumed idle when
    scaling up and at target when scaling down."""

    def __init__(self, low: int, high: int, sync_s: float = 15.0) -> None:
        self.low, self.high, self.sync_s = low, high, sync_s
        self.recs: list[tuple[float, int]] = []
        self.next_sync = 0.0

    def step(self, now: float, vms: list[SimVm], rps: float, model: FleetModel) -> list[str] | int:
        if now < self.next_sync:
            return len(vms)
        self.next_sync = now + self.sync_s
        current = len(vms)
        rec = self._recommend(now, vms, rps, current)
        self.recs = [(t, r) for t, r in self.recs if t > now - 300] + [(now, rec)]
        size = min(current, max(r for _, r in self.recs)) if rec < current else rec
        size = min(size, max(2 * current, current + 4))
        return max(self.low, min(self.high, size))

    def _recommend(self, now: float, vms: list[SimVm], rps: float, current: int) -> int:
        ready = sum(1 for vm in vms if now >= vm.ready_at)
        if ready == 0:
            return current
        ratio = (rps / ready) / TARGET_RPS
        if abs(ratio - 1) <= 0.1:
            return current
        missing = current - ready
        if ratio > 1:
            return math.ceil(rps / TARGET_RPS)
        return math.ceil((rps + missing * TARGET_RPS) / TARGET_RPS)


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


TRACES: dict[str, Callable[[int, int], list[float]]] = {"diurnal": diurnal, "spiky": spiky, "noisy": noisy}


def row(name: str, tally: Tally) -> str:
    ups = sum(1 for _, d in tally.changes if d > 0)
    return (f"  {name:<6} actions {tally.actions:5d} ({ups} up)  flaps {tally.flaps:4d}  "
            f"s-over {tally.seconds_over:6d}  req-over {tally.requests_over:11.0f}  VM-h {tally.vm_hours:7.2f}")


def ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}" if theirs else ("0 vs 0" if not ours else "inf")


SEEDS = (7, 11, 23, 5, 99)
"""Each trace is replayed with each seed and the figures summed: one lucky seed proves nothing."""


def total(tallies: list[Tally]) -> Tally:
    """The tallies of several replays added up (changes kept in order, for the up count)."""
    out = Tally()
    for t in tallies:
        out.actions, out.flaps = out.actions + t.actions, out.flaps + t.flaps
        out.seconds_over, out.requests_over = out.seconds_over + t.seconds_over, out.requests_over + t.requests_over
        out.vm_seconds += t.vm_seconds
        out.changes.extend(t.changes)
    return out


def both(make: Callable[[int, int], list[float]], seconds: int, seed: int) -> tuple[Tally, Tally]:
    """One trace through `decide()` and through the HPA model, from the same start."""
    trace = make(seconds, seed)
    start = math.ceil(trace[0] / TARGET_RPS)
    ours = replay(trace, DecideController(POLICY, start), MODEL, start)
    return ours, replay(trace, HpaController(POLICY.min_replicas, POLICY.max_replicas), MODEL, start)


def main(seconds: int = 4 * 3600) -> None:
    """Replay each trace through both controllers and print figures and ratios."""
    print(f"fleet: {MODEL.capacity_rps:g} rps per VM, boot {MODEL.boot_s:g} s; target {TARGET_RPS:g} rps per VM; "
          f"{seconds} s per trace x seeds {SEEDS} (summed), controllers see a {MODEL.metrics_window_s} s mean")
    for name, make in TRACES.items():
        runs = [both(make, seconds, seed) for seed in SEEDS]
        ours, hpa = total([o for o, _ in runs]), total([h for _, h in runs])
        print(f"{name}:")
        print(row("ours", ours))
        print(row("hpa", hpa))
        print(f"  ratio  actions {ratio(ours.actions, hpa.actions)}  flaps {ratio(ours.flaps, hpa.flaps)}  "
              f"s-over {ratio(ours.seconds_over, hpa.seconds_over)}  "
              f"req-over {ratio(ours.requests_over, hpa.requests_over)}  VM-h {ratio(ours.vm_hours, hpa.vm_hours)}")


if __name__ == "__main__":
    main()
