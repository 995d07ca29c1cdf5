"""The fleet's load from many balancers: windows, counter resets, staleness, totals.

Pure state machine fed with `observe(report, now)` and `expire(now)`, read with `snapshot` and
`totals`. One live run per balancer name: a new `started_at` or a counter that fell ends the
old run. An ended run's last cumulative values move into `retired`, so the Prometheus counters
never go down even as balancers restart or disappear.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from services.metrics.window import BUCKETS, Outcome, RunTrack, VmDelta
from shared.contract.load import BackendLoad, BalancerReported, FleetLoaded, VmLoad
from shared.histogram import merge, quantile

STALE_INTERVALS = 3.0
"""A balancer silent for this many of its report intervals is dropped."""
STALE_AT_MOST_S = 60.0
"""...and one silent this long is dropped whatever interval it claims (the contract allows an hour)."""
MAX_RUNS = 1000
"""Balancers tracked at once; reports from more are refused (a bound against hostile publishers)."""
MAX_VMS_IN_SNAPSHOT = 2000
MAX_RPS = 1e12


@dataclass
class VmTotals:
    """Cumulative counters of one VM across every balancer run seen (for Prometheus)."""

    requests: int = 0
    errors: int = 0
    counts: list[int] = field(default_factory=lambda: [0] * BUCKETS)
    sum_s: float = 0.0
    outstanding: int = 0
    touched: float = 0.0

    def add(self, load: BackendLoad, now: float) -> None:
        """Add one run's cumulative values for this VM."""
        self.requests += load.requests
        self.errors += load.errors
        self.counts = merge([self.counts, load.latency.counts])
        self.sum_s += load.latency.sum_s
        self.touched = max(self.touched, now)

    def copy(self) -> VmTotals:
        return VmTotals(self.requests, self.errors, list(self.counts), self.sum_s, self.outstanding, self.touched)


class Aggregator:
    """Windows over cumulative balancer reports; `now` is the caller's monotonic clock in seconds."""

    def __init__(self, window_s: float, forget_after_s: float) -> None:
        self.window_s = window_s
        self.forget_after_s = forget_after_s
        self.runs: dict[str, RunTrack] = {}
        self.retired: dict[str, VmTotals] = {}
        self.merged = 0
        """Reports taken since start: a snapshot that follows no new one brings no news (see `FleetLoaded.reports`)."""

    def observe(self, report: BalancerReported, now: float) -> Outcome:
        """Take one report; say what it did (a new run, a reset, ignored as out of order...)."""
        outcome = self._observe(report, now)
        if outcome not in (Outcome.OUT_OF_ORDER, Outcome.REFUSED):
            self.merged += 1
        return outcome

    def _observe(self, report: BalancerReported, now: float) -> Outcome:
        run = self.runs.get(report.balancer)
        started = report.started_at.timestamp()
        if run is None:
            return self._start(report, now, self._counted_from(report), Outcome.STARTED)
        if started < run.started_at or run.is_older(report):
            return Outcome.OUT_OF_ORDER
        if started > run.started_at:
            self._retire(run, now)
            return self._start(report, now, self._counted_from(report), Outcome.STARTED)
        if run.resets(report):
            self._retire(run, now)
            return self._start(report, now, run.latest.at, Outcome.RESET)
        return run.add(report, now)

    def _counted_from(self, report: BalancerReported) -> float | None:
        """Count a new run's first report in full only when its counting began within the window."""
        started, at = report.started_at.timestamp(), report.at.timestamp()
        return started if 0 <= at - started <= self.window_s + report.interval_s else None

    def _start(self, report: BalancerReported, now: float, counted_from: float | None, outcome: Outcome) -> Outcome:
        if report.balancer not in self.runs and len(self.runs) >= MAX_RUNS:
            return Outcome.REFUSED
        self.runs[report.balancer] = RunTrack(report, now, self.window_s, counted_from)
        return outcome

    def _retire(self, run: RunTrack, now: float) -> None:
        """Move a run's last cumulative values into the retired totals."""
        for vm, load in run.latest.backends.items():
            self.retired.setdefault(vm, VmTotals()).add(load, now)

    def expire(self, now: float) -> list[str]:
        """Drop silent balancers, trim windows, forget long-gone VMs; return the dropped balancers."""
        dropped = [name for name, run in self.runs.items() if run.is_stale(now, STALE_INTERVALS, STALE_AT_MOST_S)]
        for name in dropped:
            self._retire(self.runs.pop(name), now)
        for run in self.runs.values():
            run.prune(now)
        live = {vm for run in self.runs.values() for vm in run.latest.backends}
        cutoff = now - self.forget_after_s
        for vm in [vm for vm, t in self.retired.items() if t.touched < cutoff and vm not in live]:
            del self.retired[vm]
        return dropped

    def totals(self) -> dict[str, VmTotals]:
        """Cumulative per-VM counters (retired runs plus live runs' latest) and current outstanding."""
        result = {vm: t.copy() for vm, t in self.retired.items()}
        for run in self.runs.values():
            for vm, load in run.latest.backends.items():
                entry = result.setdefault(vm, VmTotals())
                entry.add(load, run.last_seen)
                entry.outstanding += load.outstanding
        return result

    def window(self, now: float) -> dict[str, VmDelta]:
        """Per-VM load over the window, summed over every live balancer."""
        merged: dict[str, VmDelta] = {}
        for run in self.runs.values():
            for vm, delta in run.deltas(now).items():
                _accumulate(merged.setdefault(vm, VmDelta()), delta)
        return merged

    def snapshot(self, now: float, at: datetime, source: str | None = None) -> FleetLoaded:
        """The `fleet.load` message for this moment: fleet-wide and per-VM windowed load, signed by `source`."""
        per_vm = self.window(now)
        vms = [_vm_load(vm, d) for vm, d in sorted(per_vm.items())[:MAX_VMS_IN_SNAPSHOT]]
        fleet = VmDelta()
        for delta in per_vm.values():
            _accumulate(fleet, delta)
        return FleetLoaded(
            at=at,
            window_s=self.window_s,
            balancers=len(self.runs),
            vms=vms,
            source=source,
            reports=self.merged,
            **_load_fields(fleet),
        )


def _accumulate(into: VmDelta, delta: VmDelta) -> None:
    into.requests += delta.requests
    into.errors += delta.errors
    into.counts = merge([into.counts, delta.counts])
    into.sum_s += delta.sum_s
    into.rps += delta.rps
    into.outstanding += delta.outstanding
    into.flows += delta.flows


def _load_fields(delta: VmDelta) -> dict[str, float | None]:
    """The load numbers shared by `VmLoad` and `FleetLoaded`, clamped to the contract's bounds."""
    return {
        "rps": min(delta.rps, MAX_RPS),
        "outstanding": min(delta.outstanding, MAX_RPS),
        "flows": min(delta.flows, MAX_RPS),
        "error_rate": min(1.0, delta.errors / delta.requests) if delta.requests > 0 else 0.0,
        "p50_s": quantile(delta.counts, 0.50),
        "p95_s": quantile(delta.counts, 0.95),
        "p99_s": quantile(delta.counts, 0.99),
    }


def _vm_load(vm: str, delta: VmDelta) -> VmLoad:
    return VmLoad(vm=vm, **_load_fields(delta))
