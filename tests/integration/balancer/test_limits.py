"""Client-facing limits and upstream timeouts: streams, body size, connections, first byte."""

from __future__ import annotations

import asyncio

import pytest

from shared.bus import Bus
from tests.integration.balancer.abuse import h2_pings_until_goaway
from tests.integration.balancer.h3client import h3_client
from tests.integration.balancer.harness import StartBalancer, announce
from tests.support import wait_until
from tests.support.h1server import H1Backend


async def test_streams_over_the_limit_never_run_at_once(
    bus: Bus, start_balancer: StartBalancer, quic_engine: str
) -> None:
    """With at most 2 concurrent streams per connection no more than 2 requests run at once: aioquic's client
    waits for QUIC stream credit (the cap is its MAX_STREAMS) and all 5 are served; under qh3, whose core
    advertises its own 100, the 3 extra are reset with REQUEST_REJECTED."""
    async with H1Backend() as a, start_balancer(listen_max_streams_per_connection=2) as lb:
        await announce(bus, lb, "vm-a", a.address)
        most = 0

        async def sample() -> None:
            nonlocal most
            while True:
                assert lb.server is not None
                most = max([most, *(len(c.exchanges) for c in lb.server.connections_open())])
                await asyncio.sleep(0.005)

        sampler = asyncio.create_task(sample())
        async with h3_client(lb.port) as client:
            responses = await asyncio.gather(*(client.get("/slow?ms=300") for _ in range(5)))
            after = await client.get("/")
        sampler.cancel()
    served, reset = [r.status for r in responses if not r.reset], sum(r.reset for r in responses)
    assert (served, reset) == (([200] * 5, 0) if quic_engine == "aioquic" else ([200] * 2, 3))
    assert 1 <= most <= 2
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


async def test_connections_over_the_per_address_limit_are_refused_until_one_leaves(
    bus: Bus, start_balancer: StartBalancer
) -> None:
    """With listen_max_connections_per_ip=2 a third connection from 127.0.0.1 is refused (counted as `per_ip`)
    while the two keep working, and once one of them closes the address is admitted again."""
    async with H1Backend() as a, start_balancer(listen_max_connections_per_ip=2) as lb:
        await announce(bus, lb, "vm-a", a.address)
        per_ip = lb.server.limits.per_ip if lb.server is not None else None
        assert per_ip is not None
        async with h3_client(lb.port) as first:
            async with h3_client(lb.port) as second:
                with pytest.raises(ConnectionError):
                    async with h3_client(lb.port) as third:
                        await third.get("/")
                assert (await first.get("/")).status == (await second.get("/")).status == 200
            await wait_until(lambda: per_ip.open["127.0.0.1"] == 1, timeout=10, what="the second connection uncounted")
            async with h3_client(lb.port) as again:
                assert (await again.get("/")).status == 200
        assert lb.router is not None and lb.router.telemetry.refused_connections == {"per_ip": 1}


async def test_dead_backend_with_no_alternative_gives_502(bus: Bus, start_balancer: StartBalancer) -> None:
    """When the only backend refuses connections, the client gets 502 after the one retry."""
    async with H1Backend() as a:
        address = a.address
    async with start_balancer() as lb:
        await announce(bus, lb, "vm-a", address)
        async with h3_client(lb.port) as client:
            response = await client.get("/")
    assert response.status == 502


async def test_an_http2_connection_kept_alive_by_pings_is_closed_after_the_http_idle_timeout(
    start_balancer: StartBalancer,
) -> None:
    """On TCP the shorter of listen_idle_timeout_s and listen_http_idle_timeout_s applies: an HTTP/2 connection
    with no request, only PINGs, gets GOAWAY and is closed after the HTTP idle timeout (1 s, not 60)."""
    async with start_balancer(listen_http_idle_timeout_s=1.0) as balancer:
        goaway, took = await h2_pings_until_goaway(balancer.port, every_s=0.2, within_s=10)
        assert balancer.tcp is not None
        await wait_until(lambda: balancer.tcp.connections == 0, timeout=5, what="the connection uncounted")
    assert goaway and 0.9 < took < 5
