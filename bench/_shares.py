"""Who was the bottleneck: CPU shares of the processes in a scenario, and the verdict (pure).

A ratio between two proxies means something only when each proxy was the one at its limit. A
scenario is flagged when the system under test used less than `SUT_BUSY` of its core while the
core of the load generator and backends was at `OTHER_BUSY` or more: then the figure measures
the generator, not the proxy.
"""

from __future__ import annotations

from dataclasses import dataclass

SUT_BUSY = 0.90
OTHER_BUSY = 0.90


@dataclass(frozen=True)
class Share:
    """One process's CPU over a scenario: seconds used, on how many cores, over how long."""

    name: str
    cpu_s: float
    wall_s: float
    cores: str = "0"

    @property
    def share(self) -> float:
        """CPU seconds per wall second per core it may run on (1.0: its cores were saturated)."""
        width = max(1, len(self.cores.split(",")))
        return self.cpu_s / self.wall_s / width if self.wall_s > 0 else 0.0


def per_core(shares: list[Share]) -> dict[str, float]:
    """The summed share of the processes pinned to each core set (processes sharing a core add up)."""
    sums: dict[str, float] = {}
    for item in shares:
        sums[item.cores] = sums.get(item.cores, 0.0) + item.share
    return sums


def bottleneck(sut: Share, others: list[Share]) -> str | None:
    """Why a throughput figure is not the system under test's, or None when it is."""
    if sut.share >= SUT_BUSY:
        return None
    busy = {cores: total for cores, total in per_core(others).items() if cores != sut.cores and total >= OTHER_BUSY}
    if not busy:
        return None
    where = ", ".join(f"core {cores} at {total:.0%}" for cores, total in sorted(busy.items()))
    return f"system under test at {sut.share:.0%} of its core while {where}: load-bound, not comparable"


def describe(shares: list[Share]) -> str:
    """`name 97% (core 0)` for each process, in order."""
    return ", ".join(f"{s.name} {s.share:.0%} (core {s.cores})" for s in shares)
