"""Replay request-rate traces through `decide()`, before and after the warm pool and boot lead, and an HPA model.

All run on the same fleet model (`bench.simulate`: capacity per VM, boot time, four
hosts) and the same target (requests/s per VM). "before" is the default policy without the
pool and the lead (`boot_lead_percentile=0`); "after" keeps `pool_size=1` per host and the
default lead (p90 of the measured waits): a scale-out served from the pool is ready
`resume_s` (3 s) after it is asked for, a boot takes `boot_s` (15 s). Printed per trace,
summed over the seeds: scale actions, flaps (a reversal within 5 minutes), seconds and
requests above capacity, running VM-hours and pool VM-hours (paused VMs, billed apart), the
ratios of each to the HPA's, and on how many seeds "after" meets the target (no flap, at most
half the HPA's actions and requests above capacity, no more running VM-hours).

    .venv/bin/python -m bench scaler_replay     (about 3 minutes on 2 cores)

The multi-day traces, with the forecast off and on, are its companion `bench/forecast_replay.py`
(`python -m bench scaler_replay forecast_replay` runs both).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from multiprocessing import Pool

from bench._traces import TRACES, trace
from bench.simulate import DecideController, FleetModel, SimFleet, Tally, replay
from shared.contract.policy import ScalingPolicy, Signal

TARGET_RPS = 70.0
MODEL = FleetModel(capacity_rps=100.0, boot_s=15.0, resume_s=3.0, hosts=4)
POLICY = ScalingPolicy(signal=Signal.RPS, target=TARGET_RPS, min_replicas=2, max_replicas=60, boot_lead_percentile=0)
"""The default policy, bench-sized, without the boot lead: "before"."""
AFTER = POLICY.model_copy(update={"pool_size": 1, "boot_lead_percentile": ScalingPolicy().boot_lead_percentile})
"""The same with a warm pool of one VM per host and the default boot lead: "after"."""
SEEDS = (7, 11, 23, 5, 99)
"""Each trace is replayed with each seed and the figures summed: one lucky seed proves nothing."""


class HpaController:
    """The HPA with default behaviour: 15 s sync, 10% tolerance, 300 s scale-down window,
    up by max(100%, 4 pods) and down by 100% per 15 s; booting pods are assumed idle when
    scaling up and at target when scaling down. It has no warm pool: every pod boots."""

    def __init__(self, low: int, high: int, sync_s: float = 15.0) -> None:
        self.low, self.high, self.sync_s = low, high, sync_s
        self.recs: list[tuple[float, int]] = []
        self.next_sync = 0.0

    def step(self, now: float, fleet: SimFleet, rps: float) -> None:
        if now < self.next_sync:
            return
        self.next_sync = now + self.sync_s
        current = len(fleet.vms)
        rec = self._recommend(now, fleet, rps, current)
        self.recs = [(t, r) for t, r in self.recs if t > now - 300] + [(now, rec)]
        size = min(current, max(r for _, r in self.recs)) if rec < current else rec
        size = min(size, max(2 * current, current + 4))
        fleet.resize(now, max(self.low, min(self.high, size)))

    def _recommend(self, now: float, fleet: SimFleet, rps: float, current: int) -> int:
        ready = sum(1 for vm in fleet.vms if now >= vm.ready_at)
        if ready == 0:
            return current
        ratio = (rps / ready) / TARGET_RPS
        if abs(ratio - 1) <= 0.1:
            return current
        missing = current - ready
        if ratio > 1:
            return math.ceil(rps / TARGET_RPS)
        return math.ceil((rps + missing * TARGET_RPS) / TARGET_RPS)


RUNS: dict[str, Callable[[int], DecideController | HpaController]] = {
    "before": lambda start: DecideController(POLICY, start, MODEL.hosts),
    "after": lambda start: DecideController(AFTER, start, MODEL.hosts),
    "hpa": lambda start: HpaController(POLICY.min_replicas, POLICY.max_replicas),
}


def run(job: tuple[str, str, int]) -> tuple[str, str, int, Tally]:
    """One trace and seed through one controller, from a fleet sized for the trace's first second."""
    controller, name, seed = job
    load = trace(name, seed)
    start = math.ceil(load[0] / TARGET_RPS)
    tally = replay(load, RUNS[controller](start), MODEL, start)
    tally.sizes.clear()  # not needed here, and a day of them is slow to send back from a worker
    return controller, name, seed, tally


def total(tallies: list[Tally]) -> Tally:
    """The tallies of several replays added up (changes kept in order, for the up count)."""
    out = Tally()
    for t in tallies:
        out.actions, out.flaps = out.actions + t.actions, out.flaps + t.flaps
        out.seconds_over, out.requests_over = out.seconds_over + t.seconds_over, out.requests_over + t.requests_over
        out.vm_seconds, out.pool_seconds = out.vm_seconds + t.vm_seconds, out.pool_seconds + t.pool_seconds
        out.changes.extend(t.changes)
    return out


def ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}" if theirs else ("0 vs 0" if not ours else "inf")


def meets(ours: Tally, hpa: Tally) -> list[str]:
    """The targets `ours` misses against `hpa` (empty: it meets them all)."""
    missed = []
    if ours.flaps:
        missed.append(f"{ours.flaps} flaps")
    if ours.actions > 0.5 * hpa.actions:
        missed.append(f"actions {ratio(ours.actions, hpa.actions)}")
    if ours.requests_over > 0.5 * hpa.requests_over:
        missed.append(f"req-over {ratio(ours.requests_over, hpa.requests_over)}")
    if ours.vm_hours > hpa.vm_hours:
        missed.append(f"VM-h {ratio(ours.vm_hours, hpa.vm_hours)}")
    return missed


def row(name: str, tally: Tally) -> str:
    ups = sum(1 for _, d in tally.changes if d > 0)
    return (f"  {name:<7} actions {tally.actions:5d} ({ups:4d} up)  flaps {tally.flaps:3d}"
            f"  s-over {tally.seconds_over:6d}  req-over {tally.requests_over:10.0f}  VM-h {tally.vm_hours:8.2f}"
            f"  pool VM-h {tally.pool_hours:7.2f}")


def ratios(name: str, ours: Tally, hpa: Tally) -> str:
    return (f"  {name:<7} actions {ratio(ours.actions, hpa.actions):>5}  flaps {ours.flaps} vs {hpa.flaps}  "
            f"s-over {ratio(ours.seconds_over, hpa.seconds_over)}  "
            f"req-over {ratio(ours.requests_over, hpa.requests_over)}  VM-h {ratio(ours.vm_hours, hpa.vm_hours)}"
            f"  (+ pool {ratio(ours.pool_hours, hpa.vm_hours)})")


def main() -> None:
    """Replay each trace and seed through the three controllers and print figures, ratios and the target check."""
    jobs = [(c, n, s) for n in TRACES for s in SEEDS for c in RUNS]
    with Pool(os.cpu_count() or 1) as pool:
        results = pool.map(run, sorted(jobs, key=lambda job: job[1] != "daily"), chunksize=1)
    print(f"fleet: {MODEL.capacity_rps:g} rps per VM, boot {MODEL.boot_s:g} s, resume from the pool "
          f"{MODEL.resume_s:g} s, {MODEL.hosts} hosts; target {TARGET_RPS:g} rps per VM; seeds {SEEDS} (summed); "
          f"controllers see a {MODEL.metrics_window_s} s mean")
    for name in TRACES:
        got = {(c, s): t for c, n, s, t in results if n == name}
        sums = {c: total([got[(c, s)] for s in SEEDS]) for c in RUNS}
        print(f"{name} ({len(trace(name, SEEDS[0])) // 3600} h):")
        for controller in RUNS:
            print(row(controller, sums[controller]))
        print("  ours / HPA:")
        for controller in ("before", "after"):
            print(ratios(controller, sums[controller], sums["hpa"]))
        misses = {s: meets(got[("after", s)], got[("hpa", s)]) for s in SEEDS}
        short = "; ".join(f"seed {s}: {', '.join(m)}" for s, m in misses.items() if m)
        print(f"  after meets the target on {sum(not m for m in misses.values())} of {len(SEEDS)} seeds"
              + (f" (misses: {short})" if short else ""))


if __name__ == "__main__":
    main()
