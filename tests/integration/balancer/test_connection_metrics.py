"""Connection-level balancer metrics over real HTTP/3: open connections, handshakes and Retry packets."""

from __future__ import annotations

import aiohttp

from shared.bus import Bus
from tests.integration.balancer.h3client import h3_client
from tests.integration.balancer.harness import StartBalancer, announce
from tests.support import wait_until
from tests.support.h1server import H1Backend


async def test_connections_handshakes_and_retries_are_counted(bus: Bus, start_balancer: StartBalancer) -> None:
    """With Retry always on, two connections count two handshakes and two Retry packets, and the open
    gauge goes back to zero once they close."""
    async with H1Backend() as backend, start_balancer(quic_retry="always") as lb:
        await announce(bus, lb, "vm-a", backend.address)
        assert lb.router is not None
        telemetry = lb.router.telemetry
        for _ in range(2):
            async with h3_client(lb.port) as client:
                assert (await client.get("/")).status == 200
                assert telemetry.open_connections >= 1
        assert telemetry.handshakes == 2
        assert telemetry.retry_packets == 2
        await wait_until(lambda: telemetry.open_connections == 0, what="connections closed")


async def test_malformed_events_show_in_the_balancers_rejected_inputs(bus: Bus, start_balancer: StartBalancer) -> None:
    """A malformed VM event the balancer drops is counted per subject on its own /metrics."""
    async with start_balancer(balancer_metrics_port=0) as lb:
        subject = bus.subjects.vm_all.replace("*", "ready")
        for _ in range(3):
            await bus.nc.publish(subject, b'{"vm": 7}')
        series = f'quicfleet_rejected_inputs_total{{service="balancer",subject="{subject}"}} 3.0'

        async def scraped() -> bool:
            async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{lb.metrics_port}/metrics") as r:
                return series in await r.text()

        await wait_until(scraped, what=series)
