"""nghttp2's h2load, an HTTP/3 client built on nghttp3 (the stack curl uses), gets every response."""

from __future__ import annotations

import asyncio
import os

import pytest

from bench import _h2load
from shared.bus import Bus
from tests.integration.balancer.harness import StartBalancer, announce
from tests.support.h1server import H1Backend


async def test_h2load_gets_1000_responses_with_none_failed(bus: Bus, start_balancer: StartBalancer) -> None:
    """1,000 GETs, 4 connections x 8 streams, QPACK dynamic table on (h2load's default): 0 failed."""
    binary = _h2load.find()
    if binary is None:
        pytest.skip("h2load with HTTP/3 not found (QUICFLEET_BENCH_H2LOAD, PATH, ../shared/tools/h2load): "
                    "the nghttp3 interoperability check did not run")
    async with H1Backend() as backend, start_balancer() as lb:
        await announce(bus, lb, "vm-a", backend.address)
        cores = ",".join(str(core) for core in sorted(os.sched_getaffinity(0)))
        run = await asyncio.to_thread(
            _h2load.run, binary, f"https://127.0.0.1:{lb.port}/", cores, ["-n", "1000", "-c", "4", "-m", "8"], 60.0
        )
    assert (run.done, run.failed, run.errored) == (1000, 0, 0)
    assert run.header_savings > 50, "responses are still compressed against the QPACK table"
