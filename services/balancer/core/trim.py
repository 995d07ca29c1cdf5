"""When to give freed memory back to the OS: after a connection storm has subsided.

A storm leaves the balancer holding memory its closed connections no longer use (see `reclaim`).
Returning it costs a full garbage collection and a walk of the heap, so it is done once per storm:
when the open connections have fallen to half their peak since the last return (and by at least
`min_drop`, so small swings never count), have stopped falling (the storm is over, not halfway
out), and the last return is at least `min_interval_s` old. Pure: the caller passes `now`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrimPolicy:
    """How big a fall in open connections is worth a return of memory, and how often one may run."""

    min_interval_s: float = 10.0
    """Shortest time between two returns (0: never return)."""
    min_drop: int = 64
    """Connections the count must have fallen by from its peak."""


def trim_due(
    policy: TrimPolicy, now: float, held: int, previous: int, peak: int, last_at: float | None
) -> bool:
    """Whether to return memory now, with `held` connections open, `previous` at the last look, `peak` the
    most since the last return (at `last_at`, None: never)."""
    if policy.min_interval_s <= 0:
        return False
    fell = peak - held >= policy.min_drop and 2 * held <= peak
    settled = held >= previous
    rested = last_at is None or now - last_at >= policy.min_interval_s
    return fell and settled and rested
