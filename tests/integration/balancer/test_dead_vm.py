"""A VM that dies without a word (no RST, no ICMP): its in-flight requests are aborted at once on the event."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from services.balancer.upstream.checks import check_all
from shared.bus import Bus
from shared.contract.events import VmState
from tests.integration.balancer.h3client import h3_client
from tests.integration.balancer.harness import StartBalancer, announce
from tests.support import wait_until
from tests.support.h1server import H1Backend
from tests.support.h3server import H3Backend

NO_TIMEOUT = {"upstream_first_byte_timeout_s": 3000, "upstream_try_timeout_s": 0, "balancer_retry_budget": 1.0}
"""Timeouts so long that only the abort can explain a prompt answer."""



async def test_destroyed_vm_in_flight_gets_retry_on_another_and_posts_502(
    bus: Bus, start_balancer: StartBalancer
) -> None:
    """On `destroyed`, hung in-flight GETs complete on another VM and a hung POST gets 502, long before the timeout."""
    async with H1Backend() as hung, H1Backend() as good, start_balancer(**NO_TIMEOUT) as lb:
        router = lb.router
        assert router is not None
        hung.mute = True
        await announce(bus, lb, "vm-hung", hung.address)
        async with h3_client(lb.port) as client:
            gets = [asyncio.create_task(client.get("/slow?ms=20")) for _ in range(3)]
            post = asyncio.create_task(client.request("POST", "/slow?ms=20", body=b"x" * 100))
            dead = router.table.get("vm-hung")
            await wait_until(lambda: dead is not None and dead.outstanding == 4, timeout=20, what="4 in flight")
            await announce(bus, lb, "vm-good", good.address)
            await announce(bus, lb, "vm-hung", hung.address, VmState.DESTROYED)
            responses = await asyncio.wait_for(asyncio.gather(*gets), 20)
            posted = await asyncio.wait_for(post, 20)
    assert [r.status for r in responses] == [200, 200, 200]
    assert {r.headers[b"x-quicfleet-backend"] for r in responses} == {b"vm-good"}
    assert good.served("/slow") == 3
    assert posted.status == 502


async def test_failed_active_check_aborts_in_flight_requests(bus: Bus, start_balancer: StartBalancer) -> None:
    """When active checks mark a mute VM unhealthy, its hung GETs are retried at once on a healthy VM."""
    async with H1Backend() as hung, H1Backend() as good, start_balancer(**NO_TIMEOUT, health_fall=1) as lb:
        router = lb.router
        assert router is not None
        hung.mute = True
        await announce(bus, lb, "vm-hung", hung.address)
        async with h3_client(lb.port) as client:
            gets = [asyncio.create_task(client.get("/")) for _ in range(2)]
            dead = router.table.get("vm-hung")
            await wait_until(lambda: dead is not None and dead.outstanding == 2, timeout=20, what="2 in flight")
            await announce(bus, lb, "vm-good", good.address)
            await check_all(router, b"/healthz", 0.3)
            responses = await asyncio.wait_for(asyncio.gather(*gets), 20)
    assert dead is not None and not dead.health.healthy
    assert [r.headers[b"x-quicfleet-backend"] for r in responses] == [b"vm-good", b"vm-good"]


async def test_per_try_timeout_retries_a_hung_get_on_another_vm(bus: Bus, start_balancer: StartBalancer) -> None:
    """A GET stuck on a mute VM is retried elsewhere after the per-try timeout, not the first-byte timeout."""
    settings = NO_TIMEOUT | {"upstream_try_timeout_s": 0.3, "balancer_policy": "round_robin"}
    async with H1Backend() as hung, H1Backend() as good, start_balancer(**settings) as lb:
        hung.mute = True
        await announce(bus, lb, "vm-hung", hung.address)
        await announce(bus, lb, "vm-good", good.address)
        async with h3_client(lb.port) as client:
            responses = await asyncio.wait_for(asyncio.gather(*(client.get("/") for _ in range(4))), 20)
    assert [r.status for r in responses] == [200] * 4
    assert hung.served("/") >= 1


async def test_destroyed_http3_vm_that_never_answers_fails_over(
    bus: Bus, start_balancer: StartBalancer, tmp_path: Path
) -> None:
    """With HTTP/3 upstream, GETs waiting on a silent UDP VM go to another VM as soon as it is destroyed."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    address = f"127.0.0.1:{silent.getsockname()[1]}"
    settings = NO_TIMEOUT | {"upstream_protocol": "http3", "upstream_connect_timeout_s": 300}
    try:
        async with H3Backend(tmp_path) as good, start_balancer(**settings) as lb:
            router = lb.router
            assert router is not None
            await announce(bus, lb, "vm-silent", address)
            async with h3_client(lb.port) as client:
                gets = [asyncio.create_task(client.get("/")) for _ in range(3)]
                dead = router.table.get("vm-silent")
                await wait_until(lambda: dead is not None and dead.outstanding == 3, timeout=20, what="3 waiting")
                await announce(bus, lb, "vm-good", good.address)
                await announce(bus, lb, "vm-silent", address, VmState.DESTROYED)
                responses = await asyncio.wait_for(asyncio.gather(*gets), 20)
    finally:
        silent.close()
    assert {r.text.strip() for r in responses} == {f"Server Address: {good.address}"}
