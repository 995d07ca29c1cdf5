"""Metrics fed by a real balancer proxying real HTTP/3 requests: counters add up, fleet.load follows."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from nats.aio.msg import Msg

from services.balancer.bootstrap import bootstrap as balancer_bootstrap
from services.balancer.service import BalancerService
from services.balancer.settings import BalancerSettings
from services.metrics.service import MetricsService
from shared.bus import Bus, decode
from shared.contract.load import BalancerReported, FleetLoaded
from tests.integration.balancer.h3client import h3_client
from tests.integration.balancer.harness import announce
from tests.integration.metrics.helpers import collect, scrape
from tests.support import wait_until
from tests.support.h1server import H1Backend

REQUESTS = 40


@pytest.fixture
async def balancer(settings_env: dict[str, str], tmp_path: Path) -> AsyncIterator[BalancerService]:
    """A real balancer on a free UDP port, reporting every 0.5 s."""
    settings = BalancerSettings(
        listen_port=0, balancer_state_dir=tmp_path / "balancer", balancer_list_window_s=0.2,
        balancer_slow_start_s=0, health_interval_s=60, balancer_report_interval_s=0.5,
    )
    async with balancer_bootstrap(settings) as service:
        yield service


async def test_counters_add_up_to_requests_sent_through_the_balancer(
    bus: Bus, metrics: MetricsService, balancer: BalancerService, http: aiohttp.ClientSession
) -> None:
    """Requests sent over HTTP/3 through the balancer show on /metrics per VM, summing to what was sent."""
    reports = await collect(bus, bus.subjects.balancer_report)
    snapshots = await collect(bus, bus.subjects.load)
    async with H1Backend() as a, H1Backend() as b:
        await announce(bus, balancer, "vm-a", a.address)
        await announce(bus, balancer, "vm-b", b.address)
        async with h3_client(balancer.port) as client:
            gate = asyncio.Semaphore(5)

            async def one() -> int:
                async with gate:
                    return (await client.get("/")).status

            statuses = await asyncio.gather(*(one() for _ in range(REQUESTS)))
        assert statuses == [200] * REQUESTS

        def carries_traffic(msg: Msg) -> bool:
            return sum(v.requests for v in decode(BalancerReported, msg.data).backends) > 0

        await reports.wait_for(carries_traffic, timeout=20)
        seen = len(snapshots.messages)
        loaded = await snapshots.wait_for(lambda m: decode(FleetLoaded, m.data).rps > 0, timeout=20)
        assert snapshots.messages.index(loaded) < seen + 2, "fleet.load took more than two snapshots"

        async def all_counted() -> dict[str, float] | None:
            counters = (await scrape(http, metrics)).get("quicfleet_backend_requests_total", {})
            return counters if sum(counters.values()) == REQUESTS else None

        counters = await wait_until(all_counted, timeout=20, what=f"{REQUESTS} requests on /metrics")
    assert set(counters) == {"vm-a", "vm-b"} and all(n > 0 for n in counters.values())
    parsed = await scrape(http, metrics)
    assert sum(parsed["quicfleet_backend_errors_total"].values()) == 0
    assert sum(parsed["quicfleet_request_duration_seconds_count"].values()) == REQUESTS
