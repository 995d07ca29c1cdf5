"""Latency histogram arithmetic over the contract's fixed buckets.

Balancers count into buckets; metrics subtracts, merges and reads quantiles. Fixed bounds make
histograms from any number of balancers add up exactly, which sampled quantiles never do.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence

from shared.contract.load import LATENCY_BOUNDS_S


def bucket_of(seconds: float) -> int:
    """Index of the bucket a latency falls in (the last index is the overflow bucket)."""
    return bisect_left(LATENCY_BOUNDS_S, seconds)


def merge(histograms: Iterable[Sequence[int]]) -> list[int]:
    """Bucket-wise sum of several histograms."""
    total = [0] * (len(LATENCY_BOUNDS_S) + 1)
    for counts in histograms:
        for i, n in enumerate(counts):
            total[i] += n
    return total


def subtract(later: Sequence[int], earlier: Sequence[int]) -> list[int]:
    """What was counted between two cumulative snapshots; a reset (counts fell) yields `later`."""
    if any(a < b for a, b in zip(later, earlier, strict=True)):
        return list(later)
    return [a - b for a, b in zip(later, earlier, strict=True)]


def quantile(counts: Sequence[int], q: float) -> float | None:
    """The q-quantile (0..1) by linear interpolation inside its bucket; None when empty."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(counts):
        if n and seen + n >= rank:
            return _interpolate(i, (rank - seen) / n)
        seen += n
    return LATENCY_BOUNDS_S[-1]


def _interpolate(bucket: int, fraction: float) -> float:
    """A point `fraction` of the way through a bucket (the overflow bucket reports its floor)."""
    if bucket >= len(LATENCY_BOUNDS_S):
        return LATENCY_BOUNDS_S[-1]
    low = LATENCY_BOUNDS_S[bucket - 1] if bucket else 0.0
    return low + (LATENCY_BOUNDS_S[bucket] - low) * max(0.0, min(1.0, fraction))
