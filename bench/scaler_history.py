"""The scaler's demand history under repeated snapshots: two metrics replicas, or snapshots faster than reports.

The burst detector (`level.step_estimate`) compares the latest jump in the history with the
spread of earlier jumps. It assumes one point per new balancer report. This bench feeds the
same windowed traces through the scaler's load glue (`track.follow`, `track.news_at`, then
`autoscale.witness`) three ways: one metrics replica snapshotting once per report (the
baseline), two replicas interleaved 0.4 s apart, and one replica snapshotting 4x per report;
each with the guards and without them (every snapshot a history point). It prints the seconds
in which a step was read (the estimate above the windowed mean by more than 5%), as a ratio to
the baseline, and the largest step factor.

    .venv/bin/python -m bench scaler_history
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

from bench._traces import SHORT, TRACES
from services.scaler.core.autoscale import witness
from services.scaler.core.level import step_estimate
from services.scaler.core.model import FleetState, VmView
from services.scaler.core.track import LoadSource, follow, load_view, news_at
from shared.contract.events import VmState
from shared.contract.load import FleetLoaded, VmLoad
from shared.contract.policy import ScalingPolicy, Signal

SECONDS, SEED, WINDOW = 1800, 7, 10
POLICY = ScalingPolicy(signal=Signal.RPS, target=70, max_replicas=60)
Snapshots = Iterator[tuple[float, FleetLoaded]]


def _windowed(raw: list[float]) -> list[float]:
    """What metrics reports each second: the mean of the last WINDOW seconds."""
    return [sum(raw[max(0, t - WINDOW + 1): t + 1]) / len(raw[max(0, t - WINDOW + 1): t + 1]) for t in range(len(raw))]


def _snapshot(rps: float, source: str, reports: int) -> FleetLoaded:
    views = [VmLoad(vm=f"vm{i}", rps=rps / 2) for i in range(2)]
    return FleetLoaded(window_s=WINDOW, rps=rps, vms=views, source=source, reports=reports)


def one_per_report(means: list[float]) -> Snapshots:
    for t, rps in enumerate(means):
        yield float(t), _snapshot(rps, "m-a", t + 1)


def two_replicas(means: list[float]) -> Snapshots:
    for t, rps in enumerate(means):
        yield float(t), _snapshot(rps, "m-a", t + 1)
        yield t + 0.4, _snapshot(rps, "m-b", t + 1)


def four_per_report(means: list[float]) -> Snapshots:
    for t, rps in enumerate(means):
        for k in range(4):
            yield t + k / 4, _snapshot(rps, "m-a", t + 1)


def _fleet() -> FleetState:
    vms = {f"vm{i}": VmView(f"vm{i}", VmState.READY, since=-100.0, created=-100.0, ready_at=-100.0) for i in range(2)}
    return FleetState(desired=2, policy=POLICY, vms=vms)


def steps_read(snapshots: Snapshots, guarded: bool) -> tuple[int, float]:
    """Seconds in which the history read a step, and the largest step factor, as the scaler would keep it."""
    state, source, before, before_at = _fleet(), LoadSource(), None, 0.0
    seconds: set[int] = set()
    biggest = 1.0
    for now, snapshot in snapshots:
        at = now
        if guarded:
            followed = follow(source, snapshot.source, now, POLICY.stale_after_s / 2)
            if followed is None:
                continue
            source, at = followed, news_at(snapshot, before, before_at, now)
        before, before_at = snapshot, at
        state = witness(state, load_view(snapshot, at), now)
        seen = state.memory.observations
        if now >= 60 and seen and (factor := step_estimate(seen, WINDOW, WINDOW) / max(seen[-1][1], 1e-9)) > 1.05:
            seconds.add(math.floor(now))
            biggest = max(biggest, factor)
    return len(seconds), biggest


def main() -> None:
    """Each trace, each way of snapshotting, with and without the guards."""
    ways: dict[str, Callable[[list[float]], Snapshots]] = {
        "two replicas": two_replicas, "4 snapshots per report": four_per_report,
    }
    print(f"{SECONDS} s of each trace (seed {SEED}), {WINDOW} s windowed; "
          "seconds that read a step, ÷ one snapshot per report")
    for name in SHORT:
        make = TRACES[name]
        means = _windowed(make(SECONDS, SEED))
        base, base_factor = steps_read(one_per_report(means), guarded=True)
        print(f"{name}: one snapshot per report: {base} s read a step (largest x{base_factor:.2f})")
        for label, way in ways.items():
            for guarded in (False, True):
                count, factor = steps_read(way(means), guarded)
                ratio = f"{count / base:6.2f}" if base else ("  same" if count == 0 else "   inf")
                print(f"  {label:<23} {'guarded' if guarded else 'raw':<8} {count:4d} s "
                      f"({count / (SECONDS - 60):4.0%} of seconds)  ratio {ratio}  largest x{factor:.2f}")


if __name__ == "__main__":
    main()
