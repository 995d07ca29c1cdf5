"""The steady HTTP/3 load held during the balancer rows, with each request's latency kept."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from tests.integration.balancer.h3client import _Client
from tests.integration.balancer.load import Load


class TimedLoad(Load):
    """`Load` (GOAWAY-aware clients counting every failure) that also records each success's latency."""

    def __init__(self, port: int, path: str = "/") -> None:
        super().__init__(port, path)
        self.latencies: list[float] = []

    async def _one(self, connection: _Client) -> None:
        ok, started = self.ok, time.perf_counter()
        await super()._one(connection)
        if self.ok > ok:
            self.latencies.append(time.perf_counter() - started)

    def mark(self) -> tuple[int, int]:
        """Where the load stands now (successes, failures), to slice a phase out later."""
        return len(self.latencies), len(self.failed)


@asynccontextmanager
async def steady(port: int, clients: int = 2) -> AsyncIterator[TimedLoad]:
    """`clients` connections sending GETs one after another until the block ends."""
    load = TimedLoad(port)
    tasks = [asyncio.create_task(load.run()) for _ in range(clients)]
    try:
        await _first_success(load)
        yield load
    finally:
        load.stop = True
        await asyncio.gather(*tasks)


async def _first_success(load: TimedLoad, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not load.latencies and not load.failed:
        if time.monotonic() > deadline:
            raise AssertionError("the steady load got no response")
        await asyncio.sleep(0.01)


def quantile(samples: Sequence[float], q: float) -> float:
    """The `q` quantile (nearest rank) of `samples`, in the samples' unit."""
    if not samples:
        raise AssertionError("no samples")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
