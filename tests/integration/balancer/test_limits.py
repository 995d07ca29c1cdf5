"""Client-facing limits and upstream timeouts: streams, body size, connections, first byte."""

from __future__ import annotations

import asyncio

import pytest

from shared.bus import Bus
from tests.integration.balancer.conftest import StartBalancer, announce
from tests.integration.balancer.h3client import h3_client
from tests.support.h1server import H1Backend

pytestmark = pytest.mark.integration


async def test_streams_over_the_limit_are_rejected_others_served(bus: Bus, start_balancer: StartBalancer) -> None:
    """With at most 2 concurrent streams per connection, extra concurrent requests are reset and 2 succeed."""
    async with H1Backend() as a, start_balancer(listen_max_streams_per_connection=2) as lb:
        await announce(bus, lb, "vm-a", a.address)
        async with h3_client(lb.port) as client:
            responses = await asyncio.gather(*(client.get("/slow?ms=300") for _ in range(5)))
            after = await client.get("/")
    assert sorted(r.status for r in responses if not r.reset) == [200, 200]
    assert sum(r.reset for r in responses) == 3
    assert after.status == 200


async def test_body_over_the_limit_gets_413(bus: Bus, start_balancer: StartBalancer) -> None:
    """A request body larger than listen_max_body_bytes is refused with 413 and the next request works."""
    async with H1Backend() as a, start_balancer(listen_max_body_bytes=1000) as lb:
        await announce(bus, lb, "vm-a", a.address)
        async with h3_client(lb.port) as client:
            refused = await client.request("POST", "/upload", body=b"x" * 5000)
            accepted = await client.request("POST", "/upload", body=b"x" * 500)
    assert refused.status == 413
    assert accepted.status == 200 and accepted.text == "received 500 bytes\n"


async def test_slow_backend_gives_504_after_first_byte_timeout(bus: Bus, start_balancer: StartBalancer) -> None:
    """A backend that does not answer within the first-byte timeout yields 504, not a hang."""
    async with H1Backend() as a, start_balancer(upstream_first_byte_timeout_s=0.2) as lb:
        await announce(bus, lb, "vm-a", a.address)
        async with h3_client(lb.port) as client:
            response = await client.get("/slow?ms=3000")
    assert response.status == 504
    assert response.text == "upstream timed out\n"


async def test_connections_over_the_limit_are_refused(bus: Bus, start_balancer: StartBalancer) -> None:
    """With listen_max_connections=1 a second client cannot connect while the first keeps working."""
    async with H1Backend() as a, start_balancer(listen_max_connections=1) as lb:
        await announce(bus, lb, "vm-a", a.address)
        async with h3_client(lb.port) as first:
            with pytest.raises(ConnectionError):
                async with h3_client(lb.port) as second:
                    await second.get("/")
            response = await first.get("/")
    assert response.status == 200


async def test_dead_backend_with_no_alternative_gives_502(bus: Bus, start_balancer: StartBalancer) -> None:
    """When the only backend refuses connections, the client gets 502 after the one retry."""
    async with H1Backend() as a:
        address = a.address
    async with start_balancer() as lb:
        await announce(bus, lb, "vm-a", address)
        async with h3_client(lb.port) as client:
            response = await client.get("/")
    assert response.status == 502
