"""What the metrics core costs next to the decoding the bus does anyway, and how exact its quantiles are.

Baseline: validating one `BalancerReported` JSON (N VMs), which `Bus.subscribe` does for every
report before our handler runs. Measured in the same run against it: `observe` of that report
(steady state, a full window of earlier reports), one `snapshot` of B balancers x N VMs, one
`/metrics` render. Then p50/p95/p99 read from the merged bucket histogram against the exact
quantiles of the same lognormal latency sample (ratio 1.00 = exact).

    .venv/bin/python -m bench metrics_aggregate
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from services.metrics.exposition import make_registry, render
from services.metrics.state import MetricsState
from shared.bus import encode
from shared.contract.load import BackendLoad, BalancerReported
from shared.histogram import bucket_of, quantile
from tests.unit.metrics.builders import backend

T0 = datetime(2026, 1, 1, tzinfo=UTC)
BALANCERS = 3
WINDOW_S = 10.0


def best_of(fn: Callable[[], object], repeat: int = 5, number: int = 200) -> float:
    """Best mean seconds per call over `repeat` rounds of `number` calls (least disturbed by neighbours)."""
    rounds = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        rounds.append((time.perf_counter() - start) / number)
    return min(rounds)


def make_report(balancer: str, t: int, vms: int) -> BalancerReported:
    loads = [backend(f"vm-{n}", 100 * t + n, errors=t, outstanding=n % 7) for n in range(vms)]
    return BalancerReported(balancer=balancer, started_at=T0, at=T0 + timedelta(seconds=t), backends=loads)


def warm_state(vms: int) -> MetricsState:
    """A state holding a full window of reports from every balancer."""
    state = MetricsState(WINDOW_S, history_s=900, interval_s=1)
    for t in range(1, int(WINDOW_S) + 2):
        for b in range(BALANCERS):
            state.aggregator.observe(make_report(f"b{b}", t, vms), now=float(t))
    return state


def costs(vms: int) -> None:
    state = warm_state(vms)
    t = int(WINDOW_S) + 2
    wire = encode(make_report("b0", t, vms))
    calls = max(4, 2000 // vms)
    decode = best_of(lambda: BalancerReported.model_validate_json(wire), number=calls)
    ticks = iter(range(t, 10**9))

    def observe() -> None:
        n = next(ticks)
        state.aggregator.observe(next_reports[n % len(next_reports)], now=float(n))

    next_reports = [make_report("b0", n, vms) for n in range(t, t + 1200)]
    observe_s = best_of(observe, number=calls)
    now = float(t + 1200)
    snapshot_s = best_of(lambda: state.aggregator.snapshot(now, T0), number=max(2, calls // 4))
    registry = make_registry(state)
    render_s = best_of(lambda: render(registry), number=max(2, calls // 10))
    print(
        f"{vms:4d} VMs x {BALANCERS} balancers: decode {decode * 1e6:8.1f} us (1.00) | "
        f"observe {observe_s / decode:5.2f}x | snapshot {snapshot_s / decode:5.2f}x | "
        f"/metrics {render_s / decode:5.2f}x"
    )


def quantile_accuracy(samples: int = 200_000, seed: int = 7) -> None:
    rng = random.Random(seed)
    latencies = [rng.lognormvariate(-5.0, 0.8) for _ in range(samples)]  # median ~6.7 ms
    counts = [0] * len(BackendLoad(vm="x").latency.counts)
    for latency in latencies:
        counts[bucket_of(latency)] += 1
    exact = statistics.quantiles(latencies, n=100)
    for q, label in ((0.50, "p50"), (0.95, "p95"), (0.99, "p99")):
        estimate = quantile(counts, q) or 0.0
        truth = exact[round(q * 100) - 1]
        ratio = estimate / truth
        print(f"{label}: exact {truth * 1e3:6.2f} ms, histogram {estimate * 1e3:6.2f} ms, ratio {ratio:4.2f}")


def main() -> None:
    print("cost per call, as a multiple of decoding one report (same run):")
    for vms in (10, 100, 500):
        costs(vms)
    print("quantiles from the contract's buckets vs exact (lognormal latencies):")
    quantile_accuracy()


if __name__ == "__main__":
    main()
