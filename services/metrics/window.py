"""One balancer run's reports, kept just long enough to answer "what happened in the window".

Balancers report cumulative counters, so the load over a window is the difference between the
newest report and the one at (or just before) the window's start. Keeping that one older report
as a baseline makes the rate exact over the span the balancer's own clock says it covered,
instead of guessing from how many reports happen to fall inside the window.

Pure: every method takes `now` (the caller's monotonic clock); nothing here reads a clock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from shared.contract.load import LATENCY_BOUNDS_S, BackendLoad, BalancerReported
from shared.histogram import subtract

BUCKETS = len(LATENCY_BOUNDS_S) + 1
MAX_SAMPLES = 4096
"""Reports kept per run whatever the window: a balancer reporting absurdly often stays bounded."""


class Outcome(StrEnum):
    """What a report did to its run (logged on the report's canonical line)."""

    ACCEPTED = "accepted"
    STARTED = "started"
    RESET = "reset"
    OUT_OF_ORDER = "out_of_order"
    REFUSED = "refused"


@dataclass(frozen=True)
class Sample:
    """One report: when we got it (our clock) and when the balancer took it (its clock)."""

    received: float
    at: float
    backends: Mapping[str, BackendLoad]
    virtual: bool = False
    """A made-up all-zero report at the run's start, so a fresh run's first report counts in full."""


@dataclass
class VmDelta:
    """One VM's load in one run over the window."""

    requests: int = 0
    errors: int = 0
    counts: list[int] = field(default_factory=lambda: [0] * BUCKETS)
    sum_s: float = 0.0
    rps: float = 0.0
    outstanding: float = 0.0
    flows: float = 0.0
    """Open flows (l4 balancers), a gauge averaged over the window like `outstanding`."""


def went_backwards(before: BackendLoad, after: BackendLoad) -> bool:
    """True when a cumulative counter fell: the balancer restarted its counting."""
    if after.requests < before.requests or after.errors < before.errors:
        return True
    return any(a < b for a, b in zip(after.latency.counts, before.latency.counts, strict=True))


def sample_of(report: BalancerReported, now: float) -> Sample:
    """A report as a sample (VM name -> its load)."""
    return Sample(now, report.at.timestamp(), {b.vm: b for b in report.backends})


class RunTrack:
    """The reports of one balancer run (one `started_at`), newest last, baseline first."""

    def __init__(self, report: BalancerReported, now: float, window_s: float, counted_from: float | None) -> None:
        """Start a run; `counted_from` (balancer clock) adds a zero baseline when counting began in view."""
        self.balancer = report.balancer
        self.started_at = report.started_at.timestamp()
        self.interval_s = report.interval_s
        self.window_s = window_s
        self.samples: deque[Sample] = deque(maxlen=MAX_SAMPLES)
        first = sample_of(report, now)
        if counted_from is not None and counted_from < first.at:
            self.samples.append(Sample(now - (first.at - counted_from), counted_from, {}, virtual=True))
        self.samples.append(first)

    @property
    def latest(self) -> Sample:
        return self.samples[-1]

    @property
    def last_seen(self) -> float:
        return self.latest.received

    def is_older(self, report: BalancerReported) -> bool:
        """True when the report is not newer than the latest one of this run (late or repeated)."""
        return report.at.timestamp() <= self.latest.at

    def resets(self, report: BalancerReported) -> bool:
        """True when this report's counters are below the previous report's (same run, new counting)."""
        before = self.latest.backends
        return any(b.vm in before and went_backwards(before[b.vm], b) for b in report.backends)

    def add(self, report: BalancerReported, now: float) -> Outcome:
        """Append a report of this run (the caller checked `resets` first)."""
        sample = sample_of(report, now)
        if sample.at <= self.latest.at:
            return Outcome.OUT_OF_ORDER
        self.samples.append(sample)
        self.interval_s = report.interval_s
        self.prune(now)
        return Outcome.ACCEPTED

    def prune(self, now: float) -> None:
        """Forget reports older than the window, keeping the newest of them as the baseline."""
        start = now - self.window_s
        while len(self.samples) >= 2 and self.samples[1].received <= start:
            self.samples.popleft()

    def is_stale(self, now: float, intervals: float, at_most_s: float) -> bool:
        """True when the balancer has been silent for `intervals` of its own intervals (or `at_most_s`)."""
        return now - self.last_seen > min(intervals * self.interval_s, at_most_s)

    def deltas(self, now: float) -> dict[str, VmDelta]:
        """Per-VM load over the window: counter differences, rates over the covered span, mean outstanding."""
        baseline, latest = self.samples[0], self.latest
        span = latest.at - baseline.at
        result = {vm: _delta(baseline.backends.get(vm), load, span) for vm, load in latest.backends.items()}
        for vm, (outstanding, flows) in self._mean_gauges(now).items():
            delta = result.setdefault(vm, VmDelta())
            delta.outstanding, delta.flows = outstanding, flows
        return result

    def _mean_gauges(self, now: float) -> dict[str, tuple[float, float]]:
        """Mean outstanding and flows per VM over the real reports inside the window (absent counts as 0)."""
        start = now - self.window_s
        inside = [s for s in self.samples if not s.virtual and s.received > start] or [self.latest]
        sums: dict[str, tuple[float, float]] = {}
        for sample in inside:
            for vm, load in sample.backends.items():
                outstanding, flows = sums.get(vm, (0.0, 0.0))
                sums[vm] = (outstanding + load.outstanding, flows + load.flows)
        return {vm: (o / len(inside), f / len(inside)) for vm, (o, f) in sums.items()}


_ZERO = BackendLoad(vm="zero")


def _delta(before: BackendLoad | None, after: BackendLoad, span: float) -> VmDelta:
    """What one VM did between two reports of the same run (a VM new to the run counts from zero).

    Counters falling between reports of one run are caught when the report arrives (`resets`);
    a VM that left and came back lower is the one case left, so only the scalars are checked
    here and `subtract` handles the buckets.
    """
    if before is None or after.requests < before.requests or after.errors < before.errors:
        before = _ZERO
    requests = after.requests - before.requests
    return VmDelta(
        requests=requests,
        errors=after.errors - before.errors,
        counts=subtract(after.latency.counts, before.latency.counts),
        sum_s=max(0.0, after.latency.sum_s - before.latency.sum_s),
        rps=requests / span if span > 0 else 0.0,
    )
