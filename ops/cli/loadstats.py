"""The counting of `quicfleet load`: latency quantiles, the tallies of a run, and its summary.

Kept apart from the loops that feed it (`load`) and from the text that prints it (`loadtext`), so
the quantiles and the summary are tested with numbers; the summary is also what `--json` prints.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from pydantic import BaseModel

from ops.cli.loadoutcome import Backend, ErrorKind, Outcome
from ops.cli.loadplan import Mode, Plan


class Latencies:
    """Latency quantiles within 1 % from a bounded set of log-spaced buckets (~1,900 from 1 us to 100 s).

    shared/histogram.py's buckets are 2-2.5x apart: right for adding up every balancer's counts,
    too coarse to tell 3 ms from 4 ms at the p99 of one run; keeping every sample instead would grow
    with the run.
    """

    GROWTH = 1.01
    FLOOR_S = 1e-6

    def __init__(self) -> None:
        self.counts: Counter[int] = Counter()
        self.total = 0
        self.sum_s = 0.0
        self.max_s = 0.0

    def record(self, seconds: float) -> None:
        self.counts[self._bucket(seconds)] += 1
        self.total += 1
        self.sum_s += seconds
        self.max_s = max(self.max_s, seconds)

    def quantile(self, q: float) -> float | None:
        """The q-quantile (0..1) by nearest rank: its bucket's upper bound, never above the largest seen."""
        if not self.total:
            return None
        rank = max(1, math.ceil(q * self.total))
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                return min(self.FLOOR_S * self.GROWTH**index, self.max_s)
        return self.max_s

    def mean(self) -> float | None:
        return self.sum_s / self.total if self.total else None

    def _bucket(self, seconds: float) -> int:
        if seconds <= self.FLOOR_S:
            return 0
        return math.ceil(math.log(seconds / self.FLOOR_S, self.GROWTH))


@dataclass
class Tally:
    """What a span of the run ended in: the whole run for the summary, the last second for the live line."""

    requests: int = 0
    errors: Counter[ErrorKind] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    backends: Counter[Backend] = field(default_factory=Counter)
    latency: Latencies = field(default_factory=Latencies)

    def record(self, result: Outcome) -> None:
        """Count one request; only a successful one's latency goes into the quantiles."""
        self.requests += 1
        if result.error is not None:
            self.errors[result.error] += 1
        if result.status:
            self.statuses[result.status] += 1
        if result.backend is not None:
            self.backends[result.backend] += 1
        if result.error is None and result.latency_s is not None:
            self.latency.record(result.latency_s)

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    @property
    def sent(self) -> int:
        """Requests that went out (all but the dropped)."""
        return self.requests - self.errors[ErrorKind.DROPPED]


class LatencySummary(BaseModel):
    """Latency of the successful requests, in milliseconds (None when none succeeded)."""

    p50: float | None
    p95: float | None
    p99: float | None
    max: float | None
    mean: float | None


class BackendCount(BaseModel):
    """One backend and how many requests it answered (any status)."""

    name: str | None
    uuid: str | None
    address: str | None
    requests: int


class LoadSummary(BaseModel):
    """The result of a run, as `--json` prints it: `requests` = `ok` + `failed`, each failure by kind."""

    url: str
    mode: Mode
    rate: float | None
    concurrency: int | None
    duration_s: float
    elapsed_s: float
    requests: int
    ok: int
    failed: int
    achieved_rps: float
    errors: dict[str, int]
    statuses: dict[str, int]
    latency_ms: LatencySummary
    backends: list[BackendCount]
    interrupted: bool = False


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def summarize(plan: Plan, tally: Tally, elapsed_s: float, interrupted: bool = False) -> LoadSummary:
    """The summary of a run that took `elapsed_s` (to its last answer); every error kind is listed, zeros too."""
    latency = tally.latency
    backends = sorted(tally.backends.items(), key=lambda item: (-item[1], item[0].label()))
    return LoadSummary(
        url=plan.target.url, mode=plan.mode, rate=plan.rate, concurrency=plan.concurrency,
        duration_s=plan.duration_s, elapsed_s=round(elapsed_s, 3), requests=tally.requests,
        ok=tally.requests - tally.failed, failed=tally.failed,
        achieved_rps=round(tally.sent / elapsed_s, 2) if elapsed_s > 0 else 0.0,
        errors={kind.value: tally.errors[kind] for kind in ErrorKind},
        statuses={str(status): n for status, n in sorted(tally.statuses.items())},
        latency_ms=LatencySummary(
            p50=_ms(latency.quantile(0.5)), p95=_ms(latency.quantile(0.95)), p99=_ms(latency.quantile(0.99)),
            max=_ms(latency.max_s if latency.total else None), mean=_ms(latency.mean()),
        ),
        backends=[BackendCount(name=b.name, uuid=b.uuid, address=b.address, requests=n) for b, n in backends],
        interrupted=interrupted,
    )
